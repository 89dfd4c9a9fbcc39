"""The few model-registry calls promotion and rollout need, behind one small interface.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

TIMEOUT = 30.0


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
    def download_uri(self, name: str, version: str) -> str: ...
    def set_alias(self, name: str, alias: str, version: str) -> None: ...
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
        """None when MLflow says the resource does not exist."""
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
            if code == "RESOURCE_DOES_NOT_EXIST" or exc.code == 404 or "not found" in str(message).lower():
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

    def download_uri(self, name: str, version: str) -> str:
        out = self._call("GET", "model-versions/get-download-uri", {"name": name, "version": version})
        if not out or not out.get("artifact_uri"):
            raise RegistryError(f"MLflow returned no download URI for {name} version {version}")
        return str(out["artifact_uri"])

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call("POST", "registered-models/alias", {"name": name, "alias": alias, "version": version})

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

    def get_version(self, name: str, version: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._info(self.client.get_model_version(name, version))
        except MlflowException:
            return None

    def get_alias(self, name: str, alias: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._info(self.client.get_model_version_by_alias(name, alias))
        except MlflowException:
            return None

    def aliases(self, name: str) -> dict[str, str] | None:
        from mlflow.exceptions import MlflowException

        try:
            return {a: str(v) for a, v in self.client.get_registered_model(name).aliases.items()}
        except MlflowException:
            return None

    def versions(self, name: str) -> list[str]:
        return [str(mv.version) for mv in self.client.search_model_versions(f"name='{name}'")]

    def download_uri(self, name: str, version: str) -> str:
        return str(self.client.get_model_version_download_uri(name, version))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def set_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(name, version, key, value)


def connect(tracking_uri: str) -> Registry:
    if urllib.parse.urlparse(tracking_uri).scheme in {"http", "https"}:
        return RestRegistry(tracking_uri)
    return MlflowRegistry(tracking_uri)
