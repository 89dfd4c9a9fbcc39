"""The model registry, as every pipeline step sees it: one client, the artifact checks, one S3 client.

Promotion, rollout, sync, the pre-receive check, `sluice serve` and `sluice status` all go through
`connect()` and the `Registry` protocol (training registers through MLflow's own client in model/).

`import mlflow` costs 4-8 s on the build machines (it pulls pandas, scipy and the genai stack),
which alone would break the "promote and rollout step in under 3 s" target. Against a tracking
*server* (http/https, the normal case in CI and with `sluice up`) `RestRegistry` speaks MLflow's
REST API with the standard library. Any other tracking URI (sqlite:///, a file store)
goes through MlflowClient (`MlflowRegistry`), which is what tests with a local store use.
Both return plain `VersionInfo` records.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

TIMEOUT = 30.0

# The registry's vocabulary. Aliases Sluice moves when a rollout ends; tags model/evaluation.py writes
# (the gate's verdict on a version, against which baseline) and the one a rollback writes.
CHAMPION, PREVIOUS = "champion", "previous"
VERDICT_TAG, BASELINE_TAG, GATE_REASON_TAG = "gate.verdict", "gate.baseline_version", "gate.reason"
ROLLED_BACK_TAG = "sluice.rolled_back"


class RegistryError(RuntimeError):
    """The registry could not be reached or refused a call; the message says which and why."""


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    status: str  # READY, PENDING_REGISTRATION, FAILED_REGISTRATION
    run_id: str
    source: str
    tags: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


class Registry(Protocol):
    tracking_uri: str

    def get_version(self, name: str, version: str) -> VersionInfo | None: ...
    def get_alias(self, name: str, alias: str) -> VersionInfo | None: ...
    def aliases(self, name: str) -> dict[str, str] | None: ...  # None: no such registered model
    def versions(self, name: str) -> list[str]: ...
    def models(self) -> list[str]: ...
    def download_uri(self, name: str, version: str) -> str: ...
    def set_alias(self, name: str, alias: str, version: str) -> None: ...
    def delete_alias(self, name: str, alias: str) -> None: ...
    def set_tag(self, name: str, version: str, key: str, value: str) -> None: ...


def resolve(registry: Registry, name: str, ref: str) -> VersionInfo:
    """`ref` is a version number or an alias; LookupError says what exists instead."""
    ref = str(ref)
    found = registry.get_version(name, ref) if ref.isdigit() else registry.get_alias(name, ref)
    if found is not None:
        return found
    aliases = registry.aliases(name)
    if aliases is None:
        known = f"no registered model named {name!r}"
    else:
        known = f"versions {sorted(int(v) for v in registry.versions(name))}, aliases {sorted(aliases)}"
    what = f"version {ref}" if ref.isdigit() else f"alias {ref!r}"
    raise LookupError(f"{name!r} has no {what} in the registry ({known})")


def _says_missing(code: str, message: str) -> bool:
    """MLflow's answer for a lookup of something that does not exist (a missing alias comes back as
    INVALID_PARAMETER_VALUE "... alias champion not found", not RESOURCE_DOES_NOT_EXIST)."""
    return code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and "not found" in message.lower())


def _info(data: Mapping[str, Any]) -> VersionInfo:
    tags = data.get("tags") or []
    return VersionInfo(
        name=str(data.get("name", "")),
        version=str(data.get("version", "")),
        status=str(data.get("status", "")),
        run_id=str(data.get("run_id") or ""),
        source=str(data.get("source") or ""),
        tags={t["key"]: t.get("value", "") for t in tags} if isinstance(tags, list) else dict(tags),
        aliases=tuple(data.get("aliases") or ()),
    )


class RestRegistry:
    """MLflow's REST API (2.0 model registry endpoints) over urllib; honours the MLFLOW_TRACKING_*
    auth variables (token, username/password, insecure TLS) as MlflowClient does."""

    def __init__(self, tracking_uri: str, env: Mapping[str, str] | None = None):
        self.tracking_uri = tracking_uri.rstrip("/")
        e = os.environ if env is None else env
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if e.get("MLFLOW_TRACKING_TOKEN"):
            self._headers["Authorization"] = f"Bearer {e['MLFLOW_TRACKING_TOKEN']}"
        elif e.get("MLFLOW_TRACKING_USERNAME"):
            raw = f"{e['MLFLOW_TRACKING_USERNAME']}:{e.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        self._ssl = None
        if e.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in {"1", "true"}:
            self._ssl = ssl._create_unverified_context()

    def _call(self, method: str, endpoint: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """None when a lookup (GET) names something MLflow says does not exist. A write that fails,
        for whatever reason, raises: an alias move or tag that did not happen is never reported done."""
        url = f"{self.tracking_uri}/api/2.0/mlflow/{endpoint}"
        data = None
        if method == "GET":
            url += "?" + urllib.parse.urlencode(params)
        else:
            data = json.dumps(params).encode()
        req = urllib.request.Request(url, data=data, method=method, headers=self._headers)
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT, context=self._ssl) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            try:
                err = json.loads(text)
            except ValueError:
                err = {"message": text}
            code, message = err.get("error_code", ""), err.get("message", text)
            # Only MLflow's own "does not exist" counts: a bare 404 is a wrong URL or a proxy.
            if method == "GET" and _says_missing(code, str(message)):
                return None
            raise RegistryError(f"MLflow {method} {endpoint} failed ({exc.code} {code}): {message}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise RegistryError(f"cannot reach the MLflow tracking server at {self.tracking_uri}: {exc}") from exc
        return json.loads(body) if body else {}

    def get_version(self, name: str, version: str) -> VersionInfo | None:
        out = self._call("GET", "model-versions/get", {"name": name, "version": version})
        return _info(out["model_version"]) if out else None

    def get_alias(self, name: str, alias: str) -> VersionInfo | None:
        out = self._call("GET", "registered-models/alias", {"name": name, "alias": alias})
        return _info(out["model_version"]) if out else None

    def aliases(self, name: str) -> dict[str, str] | None:
        out = self._call("GET", "registered-models/get", {"name": name})
        if out is None:
            return None
        return {a["alias"]: str(a["version"]) for a in out["registered_model"].get("aliases", [])}

    def versions(self, name: str) -> list[str]:
        out = self._call("GET", "model-versions/search", {"filter": f"name='{name}'", "max_results": 10000})
        return [str(mv["version"]) for mv in (out or {}).get("model_versions", [])]

    def models(self) -> list[str]:
        out = self._call("GET", "registered-models/search", {"max_results": 1000})
        return sorted(str(m["name"]) for m in (out or {}).get("registered_models", []))

    def download_uri(self, name: str, version: str) -> str:
        out = self._call("GET", "model-versions/get-download-uri", {"name": name, "version": version})
        if not out or not out.get("artifact_uri"):
            raise RegistryError(f"MLflow returned no download URI for {name} version {version}")
        return str(out["artifact_uri"])

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call("POST", "registered-models/alias", {"name": name, "alias": alias, "version": version})

    def delete_alias(self, name: str, alias: str) -> None:
        self._call("DELETE", "registered-models/alias", {"name": name, "alias": alias})

    def set_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._call("POST", "model-versions/set-tag", {"name": name, "version": version, "key": key, "value": value})


class MlflowRegistry:
    """MlflowClient for tracking URIs the REST client cannot serve (sqlite:///, file stores)."""

    def __init__(self, tracking_uri: str, client: Any = None):
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = client or MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @staticmethod
    def _info(mv: Any) -> VersionInfo:
        return VersionInfo(
            name=mv.name,
            version=str(mv.version),
            status=str(mv.status),
            run_id=mv.run_id or "",
            source=mv.source or "",
            tags=dict(mv.tags or {}),
            aliases=tuple(mv.aliases or ()),
        )

    def _lookup(self, call: Callable[[], Any]) -> Any:
        """`call()`, None when MLflow says the thing does not exist; any other failure raises."""
        from mlflow.exceptions import MlflowException

        try:
            return call()
        except MlflowException as exc:
            if _says_missing(exc.error_code, str(exc)):
                return None
            raise RegistryError(f"MLflow at {self.tracking_uri}: {exc}") from exc

    def _write(self, what: str, call: Callable[[], Any]) -> None:
        from mlflow.exceptions import MlflowException

        try:
            call()
        except MlflowException as exc:
            raise RegistryError(f"MLflow at {self.tracking_uri}: {what} failed: {exc}") from exc

    def get_version(self, name: str, version: str) -> VersionInfo | None:
        mv = self._lookup(lambda: self.client.get_model_version(name, version))
        return None if mv is None else self._info(mv)

    def get_alias(self, name: str, alias: str) -> VersionInfo | None:
        mv = self._lookup(lambda: self.client.get_model_version_by_alias(name, alias))
        return None if mv is None else self._info(mv)

    def aliases(self, name: str) -> dict[str, str] | None:
        rm = self._lookup(lambda: self.client.get_registered_model(name))
        return None if rm is None else {a: str(v) for a, v in rm.aliases.items()}

    def versions(self, name: str) -> list[str]:
        found = self._lookup(lambda: self.client.search_model_versions(f"name='{name}'")) or []
        return [str(mv.version) for mv in found]

    def models(self) -> list[str]:
        return sorted(m.name for m in self._lookup(self.client.search_registered_models) or [])

    def download_uri(self, name: str, version: str) -> str:
        uri = self._lookup(lambda: self.client.get_model_version_download_uri(name, version))
        if not uri:
            raise RegistryError(f"MLflow returned no download URI for {name} version {version}")
        return str(uri)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._write(f"setting alias {alias}", lambda: self.client.set_registered_model_alias(name, alias, version))

    def delete_alias(self, name: str, alias: str) -> None:
        self._write(f"deleting alias {alias}", lambda: self.client.delete_registered_model_alias(name, alias))

    def set_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._write(f"tagging v{version}", lambda: self.client.set_model_version_tag(name, version, key, value))


def connect(tracking_uri: str) -> Registry:
    if urllib.parse.urlparse(tracking_uri).scheme in {"http", "https"}:
        return RestRegistry(tracking_uri)
    return MlflowRegistry(tracking_uri)


def move_aliases(registry: Registry, model: str, moves: dict[str, str]) -> Callable[[], list[str]]:
    """Set each alias to its version; return a function that puts them back as they were and says
    which it could not put back (a failed write is never silent)."""
    from pipelines import faults

    before = registry.aliases(model) or {}
    done: list[str] = []
    try:
        for alias, version in moves.items():
            registry.set_alias(model, alias, version)
            done.append(alias)
    except RegistryError as exc:
        problems = _restore_aliases(registry, model, before, done)
        if problems:
            raise RegistryError(
                f"{exc}; and putting back the aliases already moved failed: {'; '.join(problems)}"
            ) from exc
        raise
    faults.point("after-aliases")

    def undo() -> list[str]:
        return _restore_aliases(registry, model, before, done)

    return undo


def _restore_aliases(registry: Registry, model: str, before: dict[str, str], aliases: list[str]) -> list[str]:
    problems = []
    for alias in aliases:
        try:
            if alias in before:
                registry.set_alias(model, alias, before[alias])
            else:
                registry.delete_alias(model, alias)
        except RegistryError as exc:
            problems.append(f"alias {alias} of {model} stays moved ({exc}); set it by hand")
    return problems


# --- artifacts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactReport:
    exists: bool
    mlmodel: str | None  # the MLmodel file's text, when readable
    detail: str


def s3_client(settings: Any) -> Any:
    """The one boto3 S3 client: the Settings' endpoint (LocalStack: path-style) and credentials."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
        region_name=settings.aws_region,
        config=Config(
            s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
            retries={"max_attempts": 2},
            connect_timeout=3,
            read_timeout=10,
        ),
    )


def split_s3(uri: str) -> tuple[str, str]:
    """(bucket, key prefix ending in '/', or '') of an s3:// URI."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, (key.rstrip("/") + "/" if key else "")


def check_artifacts(uri: str, s3: Any) -> ArtifactReport:
    """Are there objects under the version's download URI, and what does its MLmodel say?"""
    if uri.startswith("s3://"):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, prefix = split_s3(uri)
        try:
            resp = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket", "404"):
                return ArtifactReport(False, None, f"bucket {bucket!r} does not exist")
            return ArtifactReport(False, None, f"cannot list {uri}: {exc}")
        except BotoCoreError as exc:
            return ArtifactReport(False, None, f"cannot reach S3 to check {uri}: {exc}")
        if int(resp.get("KeyCount", 0)) == 0:
            return ArtifactReport(False, None, f"no objects under {uri}")
        try:
            body = s3.get_object(Bucket=bucket, Key=prefix + "MLmodel")["Body"].read()
            return ArtifactReport(True, body.decode("utf-8", "replace"), "ok")
        except (ClientError, BotoCoreError):
            return ArtifactReport(True, None, f"no MLmodel file under {uri}")
    local = Path(uri.removeprefix("file://")) if uri.startswith(("file://", "/")) else None
    if local is None:
        return ArtifactReport(False, None, f"cannot check artifacts at {uri!r} (not s3:// or a local path)")
    if not local.is_dir() or not any(local.iterdir()):
        return ArtifactReport(False, None, f"no files under {local}")
    mlmodel = local / "MLmodel"
    return ArtifactReport(True, mlmodel.read_text(encoding="utf-8") if mlmodel.exists() else None, "ok")


def signature_problem(mlmodel: str | None) -> str | None:
    """None when the MLmodel declares an input signature; otherwise why not."""
    import yaml

    if mlmodel is None:
        return "its MLmodel file is missing, so it has no signature"
    try:
        doc = yaml.safe_load(mlmodel)
    except yaml.YAMLError as exc:
        return f"its MLmodel file is not valid YAML ({exc})"
    sig = (doc or {}).get("signature") if isinstance(doc, dict) else None
    if not isinstance(sig, dict) or not sig.get("inputs"):
        return "it was logged without a signature (the runtime derives its V2 metadata and input checks from it)"
    return None
