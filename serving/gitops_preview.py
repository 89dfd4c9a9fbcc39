"""`sluice serve --gitops REPO`: serve what `gitops/` declares at HEAD of REPO, the way KServe would.

A preview of the cluster's behaviour on a laptop, not a second control plane. For each model with a
rendered `gitops/models/<model>/inferenceservice.yaml` at HEAD:

- the **stable** revision is the last fully rolled-out spec in history (the newest committed manifest
  of the stable version without `canaryTrafficPercent`: `pipelines.rollout.stable_manifest_text`);
- the **canary** is the spec at HEAD while `canaryTrafficPercent` is set, and gets that share of
  requests at random (as Knative splits traffic); `canaryTrafficPercent: 0` sends everything to stable.

One V2 endpoint (`/v2/models/<model>/infer`, REST and gRPC) serves both through one kserve Model per
model name (RevisionRouter) that hands each request to the stable or canary SluiceModel. Responses carry
`x-sluice-revision: <model>-v<version>`, `x-sluice-version` and `x-sluice-commit` (REST; gRPC clients
read `model_version`). Both revisions count into one ServingMetrics, labelled by version, on the
server's `/metrics`: exactly what `sluice rollout step --metrics-url http://HOST:PORT/metrics` reads.
`GET /sluice/gitops` answers what is served and from which commit.

A background thread polls HEAD every few seconds and swaps the routes when the declared state changes.
Each storageUri is downloaded once with kserve_storage (the storage initializer's code) into a cache
keyed by URI; a revision that stays declared keeps its loaded model (and its cumulative counters).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import multiprocessing
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kserve import Model
from kserve.errors import ModelNotReady
from kserve.model import InferenceVerb
from kserve.model_repository import ModelRepository

from serving.metrics import ServingMetrics
from serving.model import DEFAULT_MAX_ROWS, SluiceModel
from serving.provenance import Provenance, read_provenance, write_provenance
from serving.server import GRACE_PERIOD, SluiceDataPlane, SluiceModelServer, install_error_handlers

log = logging.getLogger(__name__)

REVISION_HEADER = "x-sluice-revision"
VERSION_HEADER = "x-sluice-version"
COMMIT_HEADER = "x-sluice-commit"
STATUS_PATH = "/sluice/gitops"
DEFAULT_POLL_SECONDS = 3.0
MODELS_DIR = "gitops/models"


# --- what Git declares ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Revision:
    model: str
    version: str
    storage_uri: str

    @property
    def name(self) -> str:
        from pipelines.render import release_id

        return release_id(self.model, self.version)


@dataclass(frozen=True)
class Declared:
    """What Git declares for one model: the rolled-out revision, and the canary with its share."""

    model: str
    stable: Revision | None
    canary: Revision | None = None
    canary_percent: int = 0  # share of requests for the canary (0 when there is none)

    def shares(self) -> list[tuple[str, Revision, int]]:
        """(role, revision, percent) of every declared revision, stable first."""
        out: list[tuple[str, Revision, int]] = []
        if self.stable is not None:
            out.append(("stable", self.stable, 100 - self.canary_percent if self.canary else 100))
        if self.canary is not None:
            out.append(("canary", self.canary, self.canary_percent))
        return out

    def serving(self) -> list[tuple[str, Revision, int]]:
        """The revisions that get traffic (a canary at 0% is declared but not served)."""
        return [s for s in self.shares() if s[2] > 0]

    def describe(self) -> str:
        return ", ".join(f"{rev.name} {pct}% ({role})" for role, rev, pct in self.shares()) or "nothing"


def git_head(repo: Path) -> str | None:
    """The commit HEAD points at (None: no commit yet). Works in a working tree and in a bare repo."""
    from pipelines import gitrepo

    proc = gitrepo.git(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
    return proc.stdout.strip() or None


def check_repo(repo: Path) -> Path:
    """`repo` as an absolute path, or SystemExit saying why it cannot be followed."""
    from pipelines import gitrepo

    repo = Path(repo).expanduser().resolve()
    if not repo.is_dir():
        raise SystemExit(f"sluice serve --gitops: {repo} is not a directory")
    proc = gitrepo.git(repo, "rev-parse", "--git-dir", check=False)
    if proc.returncode != 0:
        raise SystemExit(f"sluice serve --gitops: {repo} is not a git repository")
    return repo


def declared_models(repo: Path, commit: str) -> list[str]:
    """Models with a rendered manifest at `commit`."""
    from pipelines import gitrepo
    from pipelines.render import MANIFEST_FILENAME

    proc = gitrepo.git(repo, "ls-tree", "-r", "--name-only", commit, "--", MODELS_DIR + "/", check=False)
    names = []
    for path in proc.stdout.splitlines():
        parts = path.split("/")
        if len(parts) == 4 and parts[3] == MANIFEST_FILENAME:
            names.append(parts[2])
    return sorted(names)


def _revision(model: str, doc: dict[str, Any]) -> Revision:
    from pipelines.promote import GitState

    state = GitState(model, doc)
    uri = str(state.predictor.get("model", {}).get("storageUri", ""))
    if not uri:
        raise ValueError(f"{model}: the manifest has no spec.predictor.model.storageUri")
    return Revision(model, state.version or "unknown", uri)


def declared_at(repo: Path, commit: str, model: str) -> Declared | None:
    """What `gitops/models/<model>/inferenceservice.yaml` declares at `commit` (None: no manifest)."""
    from pipelines import gitrepo
    from pipelines.promote import GitState, ModelPaths
    from pipelines.rollout import stable_manifest_text

    paths = ModelPaths(repo, model)
    text = gitrepo.show_file(repo, commit, paths.manifest)
    if text is None:
        return None
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or doc.get("kind") != "InferenceService":
        raise ValueError(f"{paths.manifest} at {commit[:10]} is not an InferenceService manifest")
    state = GitState(model, doc)
    if state.phase == "stable":
        return Declared(model, _revision(model, doc))
    canary = _revision(model, doc)
    stable: Revision | None = None
    if state.stable_version:
        stable_text = stable_manifest_text(paths, state.stable_version)
        if stable_text is not None:
            stable = _revision(model, yaml.safe_load(stable_text))
        else:  # history rewritten or squashed: the annotations still say what served before
            previous = state.previous()
            if previous is not None and previous.storage_uri:
                stable = Revision(model, previous.version, previous.storage_uri)
    if stable is None:
        # Nothing was ever rolled out: KServe sends everything to the only revision there is.
        return Declared(model, None, canary, 100)
    return Declared(model, stable, canary, state.canary_percent or 0)


# --- routing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Routes:
    commit: str
    stable: SluiceModel | None
    canary: SluiceModel | None
    canary_share: float  # 0..1

    def pick(self, u: float) -> SluiceModel:
        """The model for a request, given a uniform random number `u` in [0, 1)."""
        if self.canary is not None and (self.stable is None or u < self.canary_share):
            return self.canary
        if self.stable is None:
            raise RuntimeError("no revision to route to")
        return self.stable


class RevisionRouter(Model):
    """The model a client sees under the model's name: routes each request to stable or canary."""

    def __init__(self, name: str, rng: random.Random | None = None):
        super().__init__(name, return_response_headers=True)
        self.routes: Routes | None = None
        self._rng = rng or random.Random()

    def set_routes(self, routes: Routes) -> None:
        self.routes = routes  # one attribute assignment: a request sees the old or the new routes
        self.ready = True

    def start(self) -> None:
        self.ready = self.routes is not None

    def versions(self) -> list[str]:
        r = self.routes
        return [m.version for m in (r.stable, r.canary) if m is not None] if r else []

    def _current(self) -> Routes:
        if self.routes is None:
            raise ModelNotReady(self.name)
        return self.routes

    def get_input_types(self) -> list[dict[str, Any]]:
        r = self._current()
        return (r.stable or r.pick(0.0)).get_input_types()

    def get_output_types(self) -> list[dict[str, Any]]:
        r = self._current()
        return (r.stable or r.pick(0.0)).get_output_types()

    async def __call__(  # type: ignore[override]
        self,
        body: Any,
        headers: dict[str, str] | None = None,
        verb: InferenceVerb = InferenceVerb.PREDICT,
    ) -> Any:
        routes = self._current()
        target = routes.pick(self._rng.random())
        response, response_headers = await target(body, headers, verb)
        out = dict(response_headers or {})
        out[REVISION_HEADER] = f"{self.name}-v{target.version}"
        out[VERSION_HEADER] = target.version
        out[COMMIT_HEADER] = routes.commit
        return response, out


class PreviewDataPlane(SluiceDataPlane):
    async def model_metadata(self, model_name: str) -> dict[str, Any]:
        metadata = await super().model_metadata(model_name)
        model = self.model_registry.get_model(model_name)
        if isinstance(model, RevisionRouter):
            metadata["versions"] = model.versions()
            metadata["platform"] = "mlflow"
        return metadata


# --- following HEAD ----------------------------------------------------------------------------------


Fetcher = Callable[[Revision], Path]


def uri_cache_dir(cache: Path, uri: str) -> Path:
    return cache / "by-uri" / hashlib.sha256(uri.encode()).hexdigest()[:16]


def download_in_child(uri: str, dest: Path, aws_env: dict[str, str]) -> None:
    """serving.source.download in a fresh (spawned) process.

    kserve_storage downloads S3 objects with a fork()-based multiprocessing.Pool. Forked from this
    process once the gRPC server and the poll thread run, its workers deadlock on locks other threads
    held at fork time (seen: the download of the second revision hangs for good). A spawned child has
    no such threads; kserve_storage forks its pool from there.
    """
    from serving.source import download

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        pool.submit(download, uri, dest, aws_env).result()


def fetch_once(cache: Path, aws_env: dict[str, str], say: Callable[[str], None]) -> Fetcher:
    """A Fetcher that downloads each storageUri once (kserve_storage) into `cache`, keyed by URI."""

    def fetch(rev: Revision) -> Path:
        local = Path(rev.storage_uri.removeprefix("file://"))
        if local.is_absolute() and local.is_dir():
            return local  # a local model directory: serve it in place
        dest = uri_cache_dir(cache, rev.storage_uri)
        known = read_provenance(dest) if (dest / "MLmodel").is_file() else None
        if known is not None and known.source_uri == rev.storage_uri:
            return dest
        say(f"downloading {rev.name} from {rev.storage_uri}")
        started = time.perf_counter()
        download_in_child(rev.storage_uri, dest, aws_env)
        write_provenance(dest, Provenance(rev.model, rev.version, rev.storage_uri))
        say(f"downloaded {rev.name} in {time.perf_counter() - started:.1f}s to {dest}")
        return dest

    return fetch


def _say(text: str) -> None:
    print(f"[gitops {datetime.now().strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass
class GitOpsPreview:
    """Reads the declared state at HEAD, loads what it names and points the routers at it."""

    repo: Path
    fetch: Fetcher
    registry: ModelRepository
    metrics: ServingMetrics = field(default_factory=ServingMetrics)
    only: str | None = None  # serve this model only (default: every model with a manifest)
    max_rows: int = DEFAULT_MAX_ROWS
    say: Callable[[str], None] = _say
    rng: random.Random | None = None

    def __post_init__(self) -> None:
        self.commit: str | None = None  # the HEAD whose declared state is being served
        self.applied_at: str | None = None
        self.declared: dict[str, Declared] = {}
        self.routers: dict[str, RevisionRouter] = {}
        self.error: str | None = None
        self._loaded: dict[Revision, SluiceModel] = {}
        self._lock = threading.Lock()

    def sync(self) -> bool:
        """Serve what HEAD declares; True if anything changed. Raises if HEAD cannot be served (the
        previous state keeps serving)."""
        with self._lock:
            head = git_head(self.repo)
            if head is None or head == self.commit:
                return False
            names = declared_models(self.repo, head)
            if self.only is not None:
                names = [n for n in names if n == self.only]
            declared = {}
            for name in names:
                d = declared_at(self.repo, head, name)
                if d is not None:
                    declared[name] = d
            if declared == self.declared:
                self._set_commit(head)
                self.say(f"HEAD {head[:10]}: no change in what is served ({self._summary()})")
                return False
            # Load everything first: a failure here leaves the old routes serving.
            wanted = {rev for d in declared.values() for _, rev, _ in d.serving()}
            for rev in sorted(wanted, key=lambda r: (r.model, r.version)):
                if rev not in self._loaded:
                    started = time.perf_counter()
                    model = SluiceModel(
                        rev.model, self.fetch(rev), max_rows=self.max_rows, version=rev.version, metrics=self.metrics
                    )
                    model.load()
                    self._loaded[rev] = model
                    self.say(f"loaded {rev.name} in {time.perf_counter() - started:.1f}s")
            for name, d in declared.items():
                stable = self._loaded[d.stable] if d.stable is not None and d.stable in wanted else None
                canary = self._loaded[d.canary] if d.canary is not None and d.canary in wanted else None
                router = self.routers.get(name)
                if router is None:
                    router = self.routers[name] = RevisionRouter(name, self.rng)
                router.set_routes(Routes(head, stable, canary, d.canary_percent / 100.0 if canary else 0.0))
                self.registry.update(router)
            for name in set(self.routers) - set(declared):
                router = self.routers.pop(name)
                router.ready = False
                if self.registry.get_model(name) is router:
                    self.registry.unload(name)
                self.say(f"{name}: no manifest at HEAD any more, not served")
            for rev in set(self._loaded) - wanted:
                self._unload(rev)
            self.declared = declared
            self._set_commit(head)
            self.say(f"HEAD {head[:10]}: {self._summary()}")
            return True

    def _set_commit(self, head: str) -> None:
        self.commit = head
        self.applied_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.error = None

    def _unload(self, rev: Revision) -> None:
        model = self._loaded.pop(rev)
        if model.info is not None:  # the info gauge says what this process serves; counters stay
            with contextlib.suppress(KeyError):
                self.metrics.info.remove(model.name, model.version, model.info.run_id, model.info.model_uuid)
        self.say(f"unloaded {rev.name} (no traffic declared for it)")

    def _summary(self) -> str:
        if not self.declared:
            return f"nothing declared under {MODELS_DIR}/"
        return "; ".join(f"{name}: {d.describe()}" for name, d in sorted(self.declared.items()))

    def follow(self, stop: threading.Event, interval: float = DEFAULT_POLL_SECONDS) -> None:
        """Poll HEAD until `stop` is set; errors are printed once per commit and retried."""
        last_error: tuple[str | None, str] | None = None
        while not stop.wait(interval):
            try:
                self.sync()
                last_error = None
            except Exception as exc:  # keep serving the previous state, retry at the next poll
                head = git_head(self.repo)
                message = f"{type(exc).__name__}: {exc}"
                self.error = f"HEAD {head[:10] if head else '?'}: {message}"
                if last_error != (head, message):
                    self.say(f"cannot serve {self.error}; still serving {self.commit and self.commit[:10]}, retrying")
                    last_error = (head, message)

    def status(self) -> dict[str, Any]:
        models = {}
        for name, d in sorted(self.declared.items()):
            models[name] = {
                "revisions": [
                    {
                        "revision": rev.name,
                        "version": rev.version,
                        "role": role,
                        "percent": pct,
                        "storage_uri": rev.storage_uri,
                    }
                    for role, rev, pct in d.shares()
                ],
                "describe": d.describe(),
            }
        return {
            "repo": str(self.repo),
            "commit": self.commit,
            "applied_at": self.applied_at,
            "error": self.error,
            "models": models,
        }


# --- the server --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewOptions:
    repo: Path
    model: str | None = None
    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 8081
    max_rows: int = DEFAULT_MAX_ROWS
    poll_seconds: float = DEFAULT_POLL_SECONDS


def serve_gitops(options: PreviewOptions, cache: Path, aws_env: dict[str, str]) -> int:
    """Serve what `options.repo` declares at HEAD and follow it until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from fastapi.responses import JSONResponse
    from kserve.model_server import app  # the module-level FastAPI app every RESTServer serves

    repo = check_repo(options.repo)
    server = SluiceModelServer(
        options.host,
        http_port=options.http_port,
        grpc_port=options.grpc_port,
        workers=1,  # stable and canary share this process's metrics registry
        enable_grpc=True,
        enable_docs_url=False,
        grace_period=GRACE_PERIOD,
    )
    server.dataplane = PreviewDataPlane(model_registry=server.registered_models)
    metrics = ServingMetrics()
    preview = GitOpsPreview(
        repo,
        fetch_once(cache, aws_env, _say),
        server.registered_models,
        metrics,
        only=options.model,
        max_rows=options.max_rows,
    )
    install_error_handlers(app, server.registered_models)

    async def gitops_status() -> JSONResponse:
        return JSONResponse(preview.status())

    app.add_api_route(STATUS_PATH, gitops_status, methods=["GET"])
    metrics.expose()

    try:
        preview.sync()  # the first state is loaded before the port opens
    except Exception as exc:
        preview.error = f"{type(exc).__name__}: {exc}"
        _say(f"cannot serve HEAD yet ({preview.error}); starting empty and retrying")
    base = f"http://{options.host}:{options.http_port}"
    _say(
        f"following HEAD of {repo} every {options.poll_seconds:g}s; V2 REST {base}/v2/models/<model>/infer, "
        f"gRPC :{options.grpc_port}, metrics {base}/metrics, state {base}{STATUS_PATH}"
    )
    stop = threading.Event()
    follower = threading.Thread(
        target=preview.follow, args=(stop, options.poll_seconds), name="gitops-follow", daemon=True
    )
    follower.start()
    try:
        server.start([])  # the routers are registered by the preview, now and on every change
    finally:
        stop.set()
    return 0
