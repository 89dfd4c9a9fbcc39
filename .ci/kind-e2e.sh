#!/usr/bin/env bash
# End-to-end test of Sluice on a real Kind cluster: the whole release story, as a person runs it with
# git only. Needs a machine with a Docker engine.
#
#   sluice up (LocalStack S3, MLflow, the local CI runner and the GitOps remote .sluice/gitops.git)
#   -> terraform/cluster (Kind, cert-manager, Knative + Kourier, KServe, ArgoCD, Prometheus)
#   -> runtime image into Kind -> train v1, v2 and register a broken v3
#   -> git push v1: 100%                   (CI renders the InferenceService, ArgoCD syncs it)
#   -> git push v2: canary                 (Knative traffic split checked in the cluster and in answers)
#   -> the rollout advances on real Prometheus metrics to 100%
#   -> git push v3, forced past the gate:  ArgoCD Degraded, rollback, traffic back on v2,
#                                          release file written back by CI, ArgoCD Healthy
#   -> teardown; on failure the logs of every component are left in the log folder.
#
# Run `.ci/kind-e2e.sh --help` for options. docs/cluster.md explains each step and how to debug.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT

CLUSTER_NAME="${SLUICE_E2E_CLUSTER:-sluice-e2e}"
MODEL="${SLUICE_MODEL_NAME:-rossmann}"
SERVING_NAMESPACE="${SLUICE_E2E_NAMESPACE:-sluice-serving}"
S3_SECRET_NAME="${SLUICE_E2E_S3_SECRET:-sluice-s3}"
INGRESS_DOMAIN="${SLUICE_E2E_DOMAIN:-example.com}"
RUNTIME_IMAGE="${SLUICE_RUNTIME_IMAGE:-}"
TRAIN_CMD="${SLUICE_E2E_TRAIN_CMD:-make train}"
HOST_ADDR="${SLUICE_E2E_HOST_ADDR:-}"
GIT_PORT="${SLUICE_E2E_GIT_PORT:-9418}"
LOCAL_PORT="${SLUICE_E2E_INGRESS_PORT:-18080}"
PROMETHEUS_PORT="${SLUICE_E2E_PROMETHEUS_PORT:-19090}"
SYNC_TIMEOUT="${SLUICE_E2E_SYNC_TIMEOUT:-900}"
READY_TIMEOUT="${SLUICE_E2E_READY_TIMEOUT:-900}"
ROLLOUT_TIMEOUT="${SLUICE_E2E_ROLLOUT_TIMEOUT:-2400}"
WORK_DIR="${SLUICE_E2E_WORKDIR:-}"
LOG_DIR="${SLUICE_E2E_LOG_DIR:-}"
STATE_DIR="${SLUICE_STATE_DIR:-$REPO_ROOT/.sluice}"
GITOPS_REMOTE="${SLUICE_E2E_GITOPS_REMOTE:-$STATE_DIR/gitops.git}"
FORCE_REASON="kind e2e: a version that cannot start, forced past the gate to prove the rollback"

KEEP=0
SKIP_BUILD=0
CHECK_ONLY=0

GIT_DAEMON_PID=""
CI_LOG_PID=""
LOAD_PID=""
PLATFORM_STARTED=0
CLUSTER_STARTED=0
declare -A PF_PIDS=()
BRANCH=""
MODELS_APP=""
KOURIER_NS=""
ISVC_HOST=""
STATE=""
STEP_NO=0
STEP_NAME=""
STEP_START=0
RUN_START=$SECONDS
STEP_SUMMARY=()
readonly TOTAL_STEPS=11

usage() {
  cat <<EOF
Usage: .ci/kind-e2e.sh [--keep] [--skip-build] [--check] [--help]

End-to-end test of Sluice on a Kind cluster (needs Docker, kind, kubectl, terraform, helm, git, uv,
make, curl). It starts the local platform (make up: LocalStack, MLflow, the local CI runner and the
GitOps remote), creates the cluster with terraform/cluster (with a Prometheus that scrapes the
predictor pods), loads the runtime image built from serving/Dockerfile, and plays the release
story with git only, the way a person does: clone the GitOps remote, edit
gitops/models/<model>/release.yaml, commit, push. CI (run by the local runner) renders the
InferenceService, ArgoCD (reading the remote through git daemon) syncs it, and the script checks:

  v1  serves 100% (one Knative revision; every answer says model_version 1)
  v2  canary: status.components.predictor.traffic splits between the two revisions as
      gitops/models/<model>/status.yaml says, and answers come from both versions
      the rollout advances on the metrics Prometheus scrapes, up to 100% on v2
  v3  a version that cannot start, pushed with a 'Sluice-Force:' trailer: ArgoCD goes Degraded,
      the rollout rolls back, traffic returns to v2, CI writes version 2 back into release.yaml,
      ArgoCD is Healthy again

Each step prints its start time and duration; a summary follows at the end. On failure the logs of
every component are written to the log folder (the kind-e2e workflow uploads it).

Options:
  --keep        leave the cluster, the platform and the work directory running for debugging
  --skip-build  do not build the project's images (they must already exist in the local Docker engine)
  --check       only check the prerequisites, then exit
  -h, --help    show this help

Environment (defaults in brackets):
  SLUICE_E2E_CLUSTER          Kind cluster name [sluice-e2e]
  SLUICE_MODEL_NAME           registered model / InferenceService name [rossmann]
  SLUICE_E2E_NAMESPACE        namespace of the InferenceService [sluice-serving]
  SLUICE_E2E_S3_SECRET        name of the S3 credentials Secret [sluice-s3]
  SLUICE_RUNTIME_IMAGE        runtime image tag [read from the ServingRuntime in gitops/]
  SLUICE_E2E_TRAIN_CMD        command that trains and registers one version [make train]
  SLUICE_E2E_HOST_ADDR        host address reachable from pods [kind network gateway on Linux,
                              host.docker.internal on Docker Desktop]; LocalStack (SLUICE_S3_HOST)
                              and git daemon listen on it
  SLUICE_E2E_GITOPS_REMOTE    the GitOps remote that make up creates [\$SLUICE_STATE_DIR/gitops.git]
  SLUICE_E2E_GIT_PORT         git daemon port [9418]
  SLUICE_E2E_INGRESS_PORT     local port forwarded to Kourier [18080]
  SLUICE_E2E_PROMETHEUS_PORT  local port forwarded to Prometheus, given to CI as PROMETHEUS_URL [19090]
  SLUICE_E2E_SYNC_TIMEOUT     seconds to wait for CI and ArgoCD after a push [900]
  SLUICE_E2E_READY_TIMEOUT    seconds to wait for the InferenceService [900]
  SLUICE_E2E_ROLLOUT_TIMEOUT  seconds for the canary to reach 100% on real metrics [2400]
  SLUICE_E2E_WORKDIR          work directory (terraform state, kubeconfig, clones) [mktemp -d]
  SLUICE_E2E_LOG_DIR          where logs are written [\$SLUICE_E2E_WORKDIR/logs]
EOF
}

# ---- output ----------------------------------------------------------------------------------
ts() { date +%H:%M:%S; }
elapsed() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
end_step() {
  [[ -n "$STEP_NAME" ]] || return 0
  local took=$((SECONDS - STEP_START))
  STEP_SUMMARY+=("$(printf '%8s  (%d) %s' "$(elapsed "$took")" "$STEP_NO" "$STEP_NAME")")
  printf '[%s]   step %d done in %s\n' "$(ts)" "$STEP_NO" "$(elapsed "$took")"
  STEP_NAME=""
}
step() {
  end_step
  STEP_NO=$((STEP_NO + 1))
  STEP_NAME="$*"
  STEP_START=$SECONDS
  printf '\n\033[1m[%s] (%d/%d, +%s) %s\033[0m\n' "$(ts)" "$STEP_NO" "$TOTAL_STEPS" \
    "$(elapsed $((SECONDS - RUN_START)))" "$*"
}
info() { printf '[%s]   %s\n' "$(ts)" "$*"; }
warn() { printf '[%s]   WARNING: %s\n' "$(ts)" "$*" >&2; }
die() {
  printf '[%s]   ERROR: %s\n' "$(ts)" "$*" >&2
  exit 1
}

# ---- prerequisites ---------------------------------------------------------------------------
need() {
  local cmd="$1" hint="$2"
  if ! command -v "$cmd" >/dev/null 2>&1; then
    printf '  missing: %-10s %s\n' "$cmd" "$hint" >&2
    return 1
  fi
  printf '  found:   %-10s %s\n' "$cmd" "$(command -v "$cmd")"
}

check_prerequisites() {
  local missing=0
  need docker "install Docker Engine: https://docs.docker.com/engine/install/" || missing=1
  need kind "v0.30.0, the release the terraform provider embeds: https://kind.sigs.k8s.io/docs/user/quick-start/#installation" || missing=1
  need kubectl "https://kubernetes.io/docs/tasks/tools/ (used by terraform/cluster too)" || missing=1
  need terraform "https://developer.hashicorp.com/terraform/install (>= 1.5)" || missing=1
  need helm "https://helm.sh/docs/intro/install/ (for diagnostics: helm list -A)" || missing=1
  need git "apt-get install git" || missing=1
  need uv "https://docs.astral.sh/uv/getting-started/installation/" || missing=1
  need make "apt-get install make" || missing=1
  need curl "apt-get install curl" || missing=1
  if [[ $missing -ne 0 ]]; then
    die "install the missing tools above and run again"
  fi
  if ! docker info >/dev/null 2>&1; then
    die "docker is installed but no Docker engine answers (is the daemon running, may this user use it?)"
  fi
  info "docker engine: $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo unknown)"
  info "kind: $(kind version 2>/dev/null || echo unknown) (terraform/cluster/compatibility.yaml names the release to use)"
  info "terraform: $(terraform version | head -n1)"
}

# ---- helpers ---------------------------------------------------------------------------------
sluice() { (cd "$REPO_ROOT" && uv run --frozen sluice "$@"); }
py() { (cd "$REPO_ROOT" && uv run --frozen python - "$@"); }

kind_gateway() {
  # IPv4 gateway of the "kind" Docker network: the host as seen from the Kind node and its pods.
  docker network inspect kind --format '{{range .IPAM.Config}}{{.Gateway}} {{end}}' |
    tr ' ' '\n' | grep -E '^[0-9]+(\.[0-9]+){3}$' | head -n1
}

wait_for() {
  # wait_for <seconds> <description> <command...>: retry every 5 s until the command succeeds.
  local timeout="$1" what="$2"
  shift 2
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - start > timeout)); then
      warn "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 5
  done
  info "$what (after $((SECONDS - start))s)"
}

load_image() {
  # kind load docker-image fails with Docker 29's containerd image store (kind#3795): fall back
  # to an image archive, which kind imports into the node's containerd directly.
  local image="$1"
  if kind load docker-image "$image" --name "$CLUSTER_NAME"; then
    return 0
  fi
  warn "kind load docker-image failed (kind#3795?): loading through docker save + kind load image-archive"
  docker save "$image" -o "$WORK_DIR/runtime-image.tar"
  kind load image-archive "$WORK_DIR/runtime-image.tar" --name "$CLUSTER_NAME"
  rm -f "$WORK_DIR/runtime-image.tar"
}

port_forward() {
  # port_forward <name> <namespace> <service> <local port> <service port>: (re)start a
  # kubectl port-forward unless it is still running; pods restart, port-forwards do not follow.
  local name="$1" ns="$2" svc="$3" local_port="$4" remote_port="$5"
  local pid="${PF_PIDS[$name]:-}"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    return 0
  fi
  kubectl -n "$ns" port-forward "service/$svc" "$local_port:$remote_port" \
    >>"$LOG_DIR/port-forward-$name.log" 2>&1 &
  PF_PIDS[$name]=$!
  sleep 2
}

kourier_namespace() {
  local ns
  for ns in knative-serving kourier-system; do
    if kubectl -n "$ns" get service kourier >/dev/null 2>&1; then
      echo "$ns"
      return 0
    fi
  done
  return 1
}

forwards() {
  port_forward kourier "$KOURIER_NS" kourier "$LOCAL_PORT" 80
  port_forward prometheus monitoring prometheus-server "$PROMETHEUS_PORT" 80
}

# ---- diagnostics -----------------------------------------------------------------------------
collect_logs() {
  # Everything needed to debug a failed run, one file per component, into $LOG_DIR.
  [[ -n "$LOG_DIR" ]] || return 0
  mkdir -p "$LOG_DIR/pods"
  warn "collecting logs of every component into $LOG_DIR"
  if [[ -d "$STATE_DIR/logs" ]]; then
    cp -r "$STATE_DIR/logs" "$LOG_DIR/platform" 2>/dev/null || true
  fi
  if [[ -d "$GITOPS_REMOTE" ]]; then
    git -C "$GITOPS_REMOTE" log --all --format='%h %an %ad %s%n%b' --date=iso -n 60 >"$LOG_DIR/gitops-log.txt" 2>&1 || true
  fi
  [[ $CLUSTER_STARTED -eq 1 ]] || return 0
  {
    kubectl get nodes -o wide
    kubectl get pods -A -o wide
    kubectl -n argocd get applications -o wide
    kubectl -n "$SERVING_NAMESPACE" get inferenceservices,ksvc,configurations,revisions,routes,pods -o wide
    helm list -A
  } >"$LOG_DIR/overview.txt" 2>&1 || true
  kubectl get events -A --sort-by=.lastTimestamp >"$LOG_DIR/events.txt" 2>&1 || true
  kubectl -n argocd get applications -o yaml >"$LOG_DIR/argocd-applications.yaml" 2>&1 || true
  kubectl -n "$SERVING_NAMESPACE" get inferenceservices,ksvc,revisions -o yaml >"$LOG_DIR/serving-objects.yaml" 2>&1 || true
  kubectl -n "$SERVING_NAMESPACE" describe inferenceservice "$MODEL" >"$LOG_DIR/inferenceservice-describe.txt" 2>&1 || true
  kubectl -n knative-serving get knativeserving -o yaml >"$LOG_DIR/knativeserving.yaml" 2>&1 || true
  local ns pod
  for ns in "$SERVING_NAMESPACE" argocd kserve knative-serving knative-operator cert-manager monitoring kourier-system; do
    for pod in $(kubectl -n "$ns" get pods -o name 2>/dev/null); do
      kubectl -n "$ns" logs "$pod" --all-containers --prefix --tail=2000 \
        >"$LOG_DIR/pods/$ns.${pod#pod/}.log" 2>&1 || true
      kubectl -n "$ns" logs "$pod" --all-containers --prefix --previous --tail=500 \
        >"$LOG_DIR/pods/$ns.${pod#pod/}.previous.log" 2>/dev/null || rm -f "$LOG_DIR/pods/$ns.${pod#pod/}.previous.log"
    done
  done
  curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/targets" >"$LOG_DIR/prometheus-targets.json" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  set +e
  end_step
  [[ -n "$LOAD_PID" ]] && kill "$LOAD_PID" 2>/dev/null
  [[ $rc -ne 0 ]] && collect_logs
  local name
  for name in "${!PF_PIDS[@]}"; do
    kill "${PF_PIDS[$name]}" 2>/dev/null
  done
  [[ -n "$CI_LOG_PID" ]] && kill "$CI_LOG_PID" 2>/dev/null
  if [[ ${#STEP_SUMMARY[@]} -gt 0 ]]; then
    printf '\n[%s] steps (total %s):\n' "$(ts)" "$(elapsed $((SECONDS - RUN_START)))"
    printf '  %s\n' "${STEP_SUMMARY[@]}"
  fi
  if [[ $KEEP -eq 1 ]]; then
    info "--keep: cluster '$CLUSTER_NAME', platform and $WORK_DIR left running"
    info "  export KUBECONFIG=$WORK_DIR/kubeconfig"
    [[ -n "$GIT_DAEMON_PID" ]] && info "  git daemon pid $GIT_DAEMON_PID (kill it when done)"
    exit "$rc"
  fi
  printf '\n[%s] teardown\n' "$(ts)"
  [[ -n "$GIT_DAEMON_PID" ]] && kill "$GIT_DAEMON_PID" 2>/dev/null
  if [[ $CLUSTER_STARTED -eq 1 ]]; then
    kind delete cluster --name "$CLUSTER_NAME"
  fi
  if [[ $PLATFORM_STARTED -eq 1 ]]; then
    (cd "$REPO_ROOT" && make down)
  fi
  if [[ $rc -eq 0 && -z "${SLUICE_E2E_WORKDIR:-}" && -n "$WORK_DIR" && -d "$WORK_DIR" ]]; then
    rm -rf "$WORK_DIR"
  fi
  if [[ $rc -eq 0 ]]; then
    printf '\n[%s] kind e2e PASSED\n' "$(ts)"
  else
    printf '\n[%s] kind e2e FAILED (exit %d); logs in %s; rerun with --keep to inspect the cluster\n' \
      "$(ts)" "$rc" "$LOG_DIR" >&2
  fi
  exit "$rc"
}

# ---- the repository's own files are the source of truth for names ----------------------------
gitops_runtime_image() {
  py "$REPO_ROOT/gitops" <<'PY'
import pathlib, sys, yaml
for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.y*ml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict) and doc.get("kind") in ("ServingRuntime", "ClusterServingRuntime"):
            for container in doc.get("spec", {}).get("containers", []):
                if container.get("image"):
                    print(container["image"])
                    sys.exit(0)
sys.exit("no ServingRuntime with a container image found under gitops/")
PY
}

project_images() {
  # "<image> <Dockerfile>" of every workload under gitops/platform that runs one of this project's
  # own images (receiver, console and jobs): no registry has them until .github/workflows/image.yml
  # publishes them, and an unpullable image in the platform Application keeps it from turning
  # Healthy, which the models Application waits for (sync waves).
  py "$1" <<'PY'
import pathlib, sys, yaml
DOCKERFILES = {"sluice-inference-log": "serving/inference_log/Dockerfile", "sluice-pipelines": "pipelines/Dockerfile"}
seen = set()
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.y*ml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if not isinstance(doc, dict):
            continue
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec") or {}
        for container in pod.get("containers", []):
            image = container.get("image", "")
            name = image.rsplit("/", 1)[-1].split(":", 1)[0]
            if name in DOCKERFILES and image not in seen:
                seen.add(image)
                print(image, DOCKERFILES[name])
PY
}

argocd_apps() {
  # "<name> <source path>" of each child Application in argocd/apps/. terraform/cluster applies
  # them directly (with the git daemon's URL), so they need not live in the GitOps remote.
  py "$REPO_ROOT/argocd/apps" <<'PY'
import pathlib, sys, yaml
found = 0
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.y*ml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "Application":
            print(doc["metadata"]["name"], doc["spec"]["source"]["path"], path.name)
            found += 1
if not found:
    sys.exit(f"no Application under {sys.argv[1]}")
PY
}

git_storage_uri() {
  # storageUri of the model's InferenceService as rendered in a checkout of the GitOps remote.
  py "$WORK_DIR/person/gitops" "$MODEL" <<'PY'
import pathlib, sys, yaml
def find(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "storageUri":
                return value
            found = find(value)
            if found:
                return found
    return None
for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.y*ml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "InferenceService" and doc["metadata"]["name"] == sys.argv[2]:
            print(find(doc["spec"]["predictor"]) or "")
            sys.exit(0)
sys.exit(f"no InferenceService {sys.argv[2]} under gitops/")
PY
}

gitops_state() {
  # One line of shell words from the CI-owned status.yaml and the release file of a checkout:
  #   phase=canary stable=1 canary=2 percent=10 action=advance release=2
  py "$1" "$MODEL" <<'PY'
import pathlib, sys, yaml
folder = pathlib.Path(sys.argv[1]) / "gitops" / "models" / sys.argv[2]
def load(name):
    path = folder / name
    doc = yaml.safe_load(path.read_text()) if path.exists() else None
    return doc if isinstance(doc, dict) else {}
status, release = load("status.yaml"), load("release.yaml")
def part(key, field):
    value = status.get(key)
    return value.get(field) if isinstance(value, dict) else None
state = dict(
    phase=status.get("phase") or "empty",
    stable=part("stable", "version"),
    canary=part("canary", "version"),
    percent=part("canary", "percent"),
    action=part("decision", "action"),
    release=release.get("version"),
)
print(" ".join(f"{k}={'' if v is None else str(v).replace(' ', '_')}" for k, v in state.items()))
PY
}

register_broken_version() {
  # Register a version that cannot start: a copy of version $1's artifacts whose MLmodel names a
  # loader module that does not exist. It has artifacts and a signature, so promotion's checks
  # pass; the evaluation gate cannot load it (hence the forced push); in the cluster the runtime
  # exits on load, the revision fails, KServe reports RevisionFailed.
  py "$MODEL" "$1" <<'PY'
import os, pathlib, sys, tempfile
import mlflow, yaml
from mlflow import MlflowClient
from pipelines.config import load_settings

model, source_version = sys.argv[1], sys.argv[2]
settings = load_settings()
for key, value in settings.aws_env().items():
    os.environ.setdefault(key, value)
mlflow.set_tracking_uri(settings.tracking_uri)
client = MlflowClient()
source = client.get_model_version(model, source_version)
uri = client.get_model_version_download_uri(model, source_version)
with tempfile.TemporaryDirectory() as tmp:
    local = pathlib.Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
    mlmodel = local / "MLmodel"
    doc = yaml.safe_load(mlmodel.read_text())
    doc["flavors"]["python_function"]["loader_module"] = "sluice_e2e_missing_loader"
    mlmodel.write_text(yaml.safe_dump(doc, sort_keys=False))
    mlflow.set_experiment("sluice-kind-e2e")
    with mlflow.start_run(run_name=f"broken copy of v{source_version}") as run:
        mlflow.log_artifacts(str(local), artifact_path="model")
        artifact_uri = mlflow.get_artifact_uri("model")
mv = client.create_model_version(
    model, artifact_uri, run_id=run.info.run_id,
    description=f"kind e2e: v{source_version}'s artifacts with a loader module that does not exist",
)
# The source's descriptive tags (data source, metrics), never its gate verdicts.
for key, value in source.tags.items():
    if not key.startswith(("gate.", "sluice.")):
        client.set_model_version_tag(model, mv.version, key, value)
client.set_model_version_tag(model, mv.version, "sluice.e2e", "broken on purpose: cannot load")
print(mv.version)
PY
}

v2_traffic() {
  # v2_traffic tally <n>: send n V2 requests through Kourier, print one JSON line
  #   {"1": 180, "2": 20, "errors": 0}   (answers counted by the model_version they carry)
  # v2_traffic load <stop file>: keep sending (a few per second) until the stop file exists.
  py "http://127.0.0.1:$LOCAL_PORT" "$ISVC_HOST" "$MODEL" "$WORK_DIR/data" "$@" <<'PY'
"""Build V2 requests from the model's metadata and generated rows; count answers by version."""
import collections, json, math, pathlib, sys, time, urllib.error, urllib.request
import pandas as pd

base, host, model, data_dir, mode, arg = sys.argv[1:7]

def call(path, body=None):
    req = urllib.request.Request(base + path, headers={"Host": host, "Content-Type": "application/json"},
                                 data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())

def request_body():
    meta = call(f"/v2/models/{model}")
    data = pathlib.Path(data_dir)
    def read(stem):
        return pd.read_csv(next(p for p in data.iterdir() if p.name.startswith(stem)), low_memory=False)
    rows = read("train").merge(read("store"), on="Store", how="left")
    rows = rows[rows["Open"] == 1].head(5)
    names = [i["name"] for i in meta.get("inputs") or []] or [
        "Store", "DayOfWeek", "Date", "Open", "Promo", "StateHoliday", "SchoolHoliday"]
    dtypes = {i["name"]: i.get("datatype", "BYTES") for i in meta.get("inputs") or []}
    inputs = []
    for name in names:
        col = rows[name] if name in rows else pd.Series([None] * len(rows))
        dt = dtypes.get(name) or ("BYTES" if col.dtype == object else "FP64" if col.dtype.kind == "f" else "INT64")
        if dt == "BYTES":
            values = ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in col]
        elif dt.startswith("FP"):
            values = [None if v is None or math.isnan(float(v)) else float(v) for v in col]
        elif dt == "BOOL":
            values = [bool(v) for v in col]
        else:
            values = [int(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else 0 for v in col]
        inputs.append({"name": name, "shape": [len(values)], "datatype": dt, "data": values})
    return {"id": "kind-e2e", "inputs": inputs}, len(rows)

def one(body, n_rows, tally):
    try:
        result = call(f"/v2/models/{model}/infer", body)
        predictions = (result.get("outputs") or [{}])[0].get("data") or []
        ok = len(predictions) == n_rows and all(isinstance(p, (int, float)) and math.isfinite(p) for p in predictions)
        tally[str(result.get("model_version")) if ok else "errors"] += 1
    except (urllib.error.URLError, OSError, ValueError):
        tally["errors"] += 1

body, n_rows = request_body()
tally = collections.Counter()
if mode == "tally":
    for _ in range(int(arg)):
        one(body, n_rows, tally)
    print(json.dumps(dict(tally), sort_keys=True))
else:
    stop, last = pathlib.Path(arg), time.monotonic()
    while not stop.exists():
        one(body, n_rows, tally)
        if time.monotonic() - last > 30:
            print(time.strftime("%H:%M:%S"), json.dumps(dict(tally), sort_keys=True), flush=True)
            last = time.monotonic()
        time.sleep(0.1)
PY
}

# ---- cluster and GitOps state ----------------------------------------------------------------
isvc_jsonpath() {
  kubectl -n "$SERVING_NAMESPACE" get inferenceservice "$MODEL" -o "jsonpath=$1" 2>/dev/null
}

traffic() {
  # "revision=percent=latest ..." from status.components.predictor.traffic (percent 0 if omitted).
  isvc_jsonpath '{range .status.components.predictor.traffic[*]}{.revisionName}={.percent}={.latestRevision}{" "}{end}' |
    sed -E 's/==/=0=/g'
}

app_health() {
  kubectl -n argocd get application "$MODELS_APP" -o jsonpath='{.status.sync.status}/{.status.health.status}' 2>/dev/null
}

refresh_argocd() {
  # ArgoCD polls Git every 30 s (argocd_reconciliation_timeout); a refresh makes it look now.
  kubectl -n argocd annotate application "$MODELS_APP" argocd.argoproj.io/refresh=normal --overwrite >/dev/null 2>&1 || true
}

sync_person() {
  # Fetch what CI committed back and read the state; refresh ArgoCD when the remote moved.
  local before after
  before="$(git -C "$WORK_DIR/person" rev-parse "origin/$BRANCH" 2>/dev/null || true)"
  git -C "$WORK_DIR/person" fetch --quiet origin
  git -C "$WORK_DIR/person" reset --quiet --hard "origin/$BRANCH"
  after="$(git -C "$WORK_DIR/person" rev-parse "origin/$BRANCH")"
  if [[ "$before" != "$after" ]]; then
    info "remote moved: $(git -C "$WORK_DIR/person" log -1 --format='%h %an: %s' "$after")"
    refresh_argocd
  fi
  STATE="$(gitops_state "$WORK_DIR/person")"
}

state_of() {
  # state_of <key>: one field of the last STATE line.
  local word
  for word in $STATE; do
    if [[ "$word" == "$1="* ]]; then
      echo "${word#*=}"
      return 0
    fi
  done
}

release() {
  # release <version> [force reason]: what a person does, with git only. CI commits to the same
  # branch (status records, rollout steps), so a push that lost the race is rebased and retried;
  # a push the pre-receive hook refuses ends the run with the hook's reason.
  local version="$1" reason="${2:-}" try
  local file="gitops/models/$MODEL/release.yaml"
  local person="$WORK_DIR/person"
  sync_person
  sed -i -E "s/^(version|alias):.*/version: $version/" "$person/$file"
  if git -C "$person" diff --quiet -- "$file"; then
    # The file already names this version (the seeded release file says version 1): a person
    # asks again by touching the file, and CI sees a change of the release file.
    printf '# kind e2e: release v%s requested at %s\n' "$version" "$(date -u +%FT%TZ)" >>"$person/$file"
  fi
  git -C "$person" add "$file"
  if [[ -n "$reason" ]]; then
    git -C "$person" commit --quiet -m "$MODEL: release v$version" -m "Sluice-Force: $reason"
  else
    git -C "$person" commit --quiet -m "$MODEL: release v$version"
  fi
  for try in 1 2 3; do
    if git -C "$person" push origin "HEAD:$BRANCH" 2>"$WORK_DIR/push.err"; then
      info "pushed: $(git -C "$person" log -1 --format='%h %s')"
      return 0
    fi
    if grep -qE 'non-fast-forward|fetch first' "$WORK_DIR/push.err"; then
      warn "CI pushed first (try $try): rebasing on the remote and pushing again"
      git -C "$person" pull --quiet --rebase origin "$BRANCH"
      continue
    fi
    cat "$WORK_DIR/push.err" >&2
    die "the GitOps remote refused the push of v$version (its pre-receive hook says why, above)"
  done
  die "could not push v$version: CI kept pushing first"
}

wait_state() {
  # wait_state <seconds> <description> <check> [args]: fetch the remote until <check> (a function
  # reading $STATE through state_of) succeeds.
  local timeout="$1" what="$2" start=$SECONDS last=""
  shift 2
  while true; do
    sync_person
    if [[ "$STATE" != "$last" ]]; then
      info "gitops: $STATE"
      last="$STATE"
    fi
    if "$@"; then
      info "$what (after $((SECONDS - start))s)"
      return 0
    fi
    ((SECONDS - start <= timeout)) || die "timed out after ${timeout}s waiting for $what (last: $STATE)"
    sleep 10
  done
}

wait_cluster_serves_git() {
  local want
  want="$(git_storage_uri)"
  [[ -n "$want" ]] || die "the rendered InferenceService has no storageUri"
  info "Git declares storageUri $want"
  refresh_argocd
  wait_for "$SYNC_TIMEOUT" "the cluster carries that storageUri" isvc_has_storage_uri "$want"
}

isvc_has_storage_uri() {
  [[ "$(isvc_jsonpath '{.spec.predictor}')" == *"$1"* ]]
}

isvc_rolled_out() {
  # Ready, the newest revision ready, and it holds all the traffic (a 0% entry may stay listed).
  local ready created latest entry
  ready="$(isvc_jsonpath '{.status.conditions[?(@.type=="Ready")].status}')"
  created="$(isvc_jsonpath '{.status.components.predictor.latestCreatedRevision}')"
  latest="$(isvc_jsonpath '{.status.components.predictor.latestReadyRevision}')"
  [[ "$ready" == "True" && -n "$created" && "$created" == "$latest" ]] || return 1
  for entry in $(traffic); do
    case "$entry" in
      "$latest=100="*) ;;
      *=0=*) ;;
      *) return 1 ;;
    esac
  done
  [[ "$(traffic)" == *"$latest=100="* ]]
}

canary_split() {
  # canary_split <percent> <previous revision>: the newest revision holds <percent>%, the
  # previous one the rest.
  local t
  t="$(traffic)"
  [[ "$t" == *"=$1=true "* && "$t" == *"$2=$((100 - $1))=false "* ]]
}

no_traffic_on() {
  [[ "$(traffic)" != *"$1="[1-9]* ]]
}

revision_created_after() {
  local created
  created="$(isvc_jsonpath '{.status.components.predictor.latestCreatedRevision}')"
  [[ -n "$created" && "$created" != "$1" ]]
}

app_is() {
  # app_is <sync/health pattern>, e.g. Synced/Healthy or */Degraded
  # shellcheck disable=SC2053 # the argument is a glob on purpose
  [[ "$(app_health)" == $1 ]]
}

# Checks of the GitOps state for wait_state.
released() { [[ "$(state_of phase)" == stable && "$(state_of stable)" == "$1" ]]; }
canary_of() { [[ "$(state_of phase)" == canary && "$(state_of canary)" == "$1" ]]; }
canary_or_rollback_of() { [[ "$(state_of canary)" == "$1" || "$(state_of action)" == rollback ]]; }
rolled_back_to() { [[ "$(state_of stable)" == "$1" && -z "$(state_of canary)" && "$(state_of release)" == "$1" ]]; }

tally() {
  forwards
  v2_traffic tally "$1"
}

share_ok() {
  # share_ok <json tally> <version> <expected percent>: that version's share is plausible for a
  # split at <expected percent>% (binomial, generous bounds: a third to three times, and never 0).
  py "$@" <<'PY'
import json, sys
tally, version, percent = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3])
answered = sum(v for k, v in tally.items() if k != "errors")
share = 100.0 * tally.get(version, 0) / answered if answered else 0.0
low, high = percent / 3, min(100.0, percent * 3)
print(f"v{version} answered {share:.1f}% of {answered} (split {percent:g}%; accepted {low:.1f}..{high:.1f}%)")
sys.exit(0 if answered and low <= share <= high and tally.get(version, 0) > 0 else 1)
PY
}

only_version() {
  # only_version <json tally> <version>: every answer came from that version, none failed.
  py "$@" <<'PY'
import json, sys
tally, version = json.loads(sys.argv[1]), sys.argv[2]
print(f"answers: {tally}")
sys.exit(0 if tally.get(version, 0) > 0 and set(tally) == {version} else 1)
PY
}

# ---- main ------------------------------------------------------------------------------------
main() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --keep) KEEP=1 ;;
      --skip-build) SKIP_BUILD=1 ;;
      --check) CHECK_ONLY=1 ;;
      -h | --help)
        usage
        exit 0
        ;;
      *)
        usage >&2
        die "unknown argument: $1"
        ;;
    esac
    shift
  done

  step "prerequisites"
  check_prerequisites
  [[ $CHECK_ONLY -eq 1 ]] && exit 0

  if [[ -z "$WORK_DIR" ]]; then
    WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sluice-e2e.XXXXXX")"
  fi
  LOG_DIR="${LOG_DIR:-$WORK_DIR/logs}"
  mkdir -p "$WORK_DIR" "$LOG_DIR"
  export KUBECONFIG="$WORK_DIR/kubeconfig"
  export TF_DATA_DIR="$WORK_DIR/terraform-data"
  # The local CI runner (started by make up) hands these to the rollout: Prometheus through the
  # port-forward started once the cluster runs, the InferenceService status through the kubeconfig.
  export PROMETHEUS_URL="http://127.0.0.1:$PROMETHEUS_PORT"
  # A real cluster serves: no local cluster stand-in, and CI reads the cluster through the kubeconfig.
  export SLUICE_STANDIN=0
  trap cleanup EXIT
  info "work directory: $WORK_DIR, logs: $LOG_DIR"

  step "host address reachable from the cluster"
  if ! docker network inspect kind >/dev/null 2>&1; then
    # kind reuses an existing network called "kind"; creating it now gives us its gateway
    # before the cluster exists, so LocalStack and git daemon can listen on it.
    docker network create kind >/dev/null
    info "created Docker network 'kind'"
  fi
  if [[ -z "$HOST_ADDR" ]]; then
    if docker info --format '{{.OperatingSystem}}' 2>/dev/null | grep -qi 'docker desktop'; then
      HOST_ADDR="host.docker.internal"
    else
      HOST_ADDR="$(kind_gateway)"
    fi
  fi
  [[ -n "$HOST_ADDR" ]] || die "could not find the kind network gateway; set SLUICE_E2E_HOST_ADDR"
  info "pods reach the host at $HOST_ADDR"

  step "local platform (make up): LocalStack on $HOST_ADDR, MLflow, CI runner, GitOps remote"
  # LocalStack must be reachable from the pods' storage initializer: bind it to the host address
  # the cluster sees (on Docker Desktop 0.0.0.0, since host.docker.internal is not a local address).
  if [[ "$HOST_ADDR" == "host.docker.internal" ]]; then
    export SLUICE_S3_HOST="${SLUICE_S3_HOST:-0.0.0.0}"
  else
    export SLUICE_S3_HOST="${SLUICE_S3_HOST:-$HOST_ADDR}"
  fi
  local s3_port="${SLUICE_S3_PORT:-4566}"
  PLATFORM_STARTED=1
  # To a file, not through a pipe: the services make up leaves running would hold a pipe open.
  if ! (cd "$REPO_ROOT" && make up) >"$LOG_DIR/make-up.log" 2>&1; then
    tail -n 40 "$LOG_DIR/make-up.log" >&2
    die "make up failed (the whole output is in $LOG_DIR/make-up.log)"
  fi
  tail -n 5 "$LOG_DIR/make-up.log"
  curl -fsS "http://${SLUICE_S3_HOST/0.0.0.0/127.0.0.1}:${s3_port}/_localstack/health" >/dev/null ||
    die "LocalStack does not answer on ${SLUICE_S3_HOST}:${s3_port}"
  info "LocalStack answers on ${SLUICE_S3_HOST}:${s3_port}"
  [[ -d "$GITOPS_REMOTE" ]] || die "make up did not create the GitOps remote $GITOPS_REMOTE"
  BRANCH="$(git -C "$GITOPS_REMOTE" symbolic-ref --short HEAD)"
  info "GitOps remote $GITOPS_REMOTE (branch $BRANCH)"
  sluice ci log -f >"$LOG_DIR/ci.log" 2>&1 &
  CI_LOG_PID=$!
  info "CI job logs follow into $LOG_DIR/ci.log (sluice ci log -f)"

  step "git daemon: ArgoCD reads the GitOps remote"
  local daemon_listen="$HOST_ADDR" remote_name
  [[ "$HOST_ADDR" == "host.docker.internal" ]] && daemon_listen="0.0.0.0"
  remote_name="$(basename "$GITOPS_REMOTE")"
  # Read-only (upload-pack): people and CI push through the remote's own hooks, never the daemon.
  git daemon --reuseaddr --export-all --base-path="$(dirname "$GITOPS_REMOTE")" \
    --listen="$daemon_listen" --port="$GIT_PORT" "$GITOPS_REMOTE" >"$LOG_DIR/git-daemon.log" 2>&1 &
  GIT_DAEMON_PID=$!
  local git_url="git://$HOST_ADDR:$GIT_PORT/$remote_name"
  wait_for 30 "git daemon serves $git_url" \
    git ls-remote "git://${daemon_listen/0.0.0.0/127.0.0.1}:$GIT_PORT/$remote_name" "$BRANCH"
  git clone --quiet --branch "$BRANCH" "$GITOPS_REMOTE" "$WORK_DIR/person"
  git -C "$WORK_DIR/person" config user.name "sluice-e2e"
  git -C "$WORK_DIR/person" config user.email "sluice-e2e@localhost"

  step "Kind cluster '$CLUSTER_NAME' and the project's images"
  local tf=(terraform -chdir="$REPO_ROOT/terraform/cluster")
  # The AppProject and the child Applications (platform, models) are applied directly: terraform
  # points them at the git daemon, and the GitOps remote need not hold argocd/.
  local bootstrap='["../../argocd/bootstrap/project.yaml"' name path file
  MODELS_APP=""
  while read -r name path file; do
    bootstrap+=",\"../../argocd/apps/$file\""
    [[ "$path" == */models ]] && MODELS_APP="$name"
  done < <(argocd_apps)
  bootstrap+="]"
  [[ -n "$MODELS_APP" ]] || die "no Application under argocd/apps syncs gitops/models"
  info "ArgoCD applications: $bootstrap (models: $MODELS_APP)"
  local tf_vars=(
    -var "cluster_name=$CLUSTER_NAME"
    -var "kubeconfig_path=$KUBECONFIG"
    -var "s3_endpoint=$HOST_ADDR:$s3_port"
    -var "git_repo_url=$git_url"
    -var "git_revision=$BRANCH"
    -var "serving_namespace=$SERVING_NAMESPACE"
    -var "s3_secret_name=$S3_SECRET_NAME"
    -var "ingress_domain=$INGRESS_DOMAIN"
    -var "argocd_bootstrap_manifests=$bootstrap"
  )
  local state="-state=$WORK_DIR/terraform.tfstate"
  "${tf[@]}" init -input=false -no-color >"$LOG_DIR/terraform-init.log" 2>&1 ||
    die "terraform init failed: $LOG_DIR/terraform-init.log"
  CLUSTER_STARTED=1
  # The cluster first, so the runtime image is in the node before ArgoCD syncs anything.
  "${tf[@]}" apply -input=false -auto-approve -no-color "$state" "${tf_vars[@]}" -target=kind_cluster.this \
    2>&1 | tee "$LOG_DIR/terraform-cluster.log"
  if [[ -z "$RUNTIME_IMAGE" ]]; then
    RUNTIME_IMAGE="$(gitops_runtime_image)"
  fi
  info "runtime image: $RUNTIME_IMAGE"
  if [[ "$RUNTIME_IMAGE" == *:latest || "$RUNTIME_IMAGE" != *:* ]]; then
    warn "a :latest (or untagged) image is pulled Always unless imagePullPolicy is IfNotPresent"
  fi
  if [[ $SKIP_BUILD -eq 0 ]]; then
    docker build -f "$REPO_ROOT/serving/Dockerfile" -t "$RUNTIME_IMAGE" "$REPO_ROOT" 2>&1 |
      tee "$LOG_DIR/docker-build.log"
  fi
  load_image "$RUNTIME_IMAGE"
  local image dockerfile lock_sha
  lock_sha="$(sha256sum "$REPO_ROOT/uv.lock" | cut -c1-64)"
  while read -r image dockerfile; do
    info "project image: $image ($dockerfile)"
    if [[ $SKIP_BUILD -eq 0 ]]; then
      docker build -f "$REPO_ROOT/$dockerfile" --build-arg "UV_LOCK_SHA256=$lock_sha" -t "$image" "$REPO_ROOT" \
        2>&1 | tee -a "$LOG_DIR/docker-build.log"
    fi
    load_image "$image"
  done < <(project_images "$REPO_ROOT/gitops/platform")

  step "platform on the cluster: cert-manager, Knative + Kourier, KServe, Prometheus, ArgoCD"
  "${tf[@]}" apply -input=false -auto-approve -no-color "$state" "${tf_vars[@]}" 2>&1 |
    tee "$LOG_DIR/terraform-platform.log"
  KOURIER_NS="$(kourier_namespace)" || die "no Kourier gateway Service (svc/kourier) found"
  forwards
  wait_for 120 "Prometheus answers on $PROMETHEUS_URL (the URL CI's rollout reads)" \
    curl -fsS "$PROMETHEUS_URL/-/ready"

  step "train v1 and v2, register a broken v3"
  (cd "$REPO_ROOT" && eval "$TRAIN_CMD") >"$LOG_DIR/train-1.log" 2>&1 || die "training failed: $LOG_DIR/train-1.log"
  (cd "$REPO_ROOT" && eval "$TRAIN_CMD") >"$LOG_DIR/train-2.log" 2>&1 || die "training failed: $LOG_DIR/train-2.log"
  local versions
  versions="$(py "$MODEL" <<'PY'
import sys
from mlflow import MlflowClient
from pipelines.config import load_settings
client = MlflowClient(tracking_uri=load_settings().tracking_uri)
found = sorted(int(v.version) for v in client.search_model_versions(f"name='{sys.argv[1]}'"))
if len(found) < 2:
    sys.exit(f"expected two registered versions of {sys.argv[1]}, found {found}")
print(*found[-2:])
PY
)"
  local v1 v2 v3
  read -r v1 v2 <<<"$versions"
  v3="$(register_broken_version "$v2" | tail -n1)"
  info "v1=$v1 v2=$v2, broken v3=$v3"
  sluice generate-data --out "$WORK_DIR/data" --stores 3 --days 60 >/dev/null

  step "push v$v1: 100% on one revision"
  release "$v1"
  wait_state "$SYNC_TIMEOUT" "CI released v$v1" released "$v1"
  wait_cluster_serves_git
  kubectl -n "$SERVING_NAMESPACE" wait "inferenceservice/$MODEL" --for=condition=Ready --timeout="${READY_TIMEOUT}s"
  wait_for "$READY_TIMEOUT" "one revision with all traffic" isvc_rolled_out
  local rev1
  rev1="$(isvc_jsonpath '{.status.components.predictor.latestReadyRevision}')"
  ISVC_HOST="$(isvc_jsonpath '{.status.components.predictor.url}')"
  ISVC_HOST="${ISVC_HOST#*://}"
  ISVC_HOST="${ISVC_HOST%%/*}"
  [[ -n "$ISVC_HOST" ]] || ISVC_HOST="$MODEL-predictor.$SERVING_NAMESPACE.$INGRESS_DOMAIN"
  info "revision $rev1 serves v$v1; requests go to Host: $ISVC_HOST via 127.0.0.1:$LOCAL_PORT"
  forwards
  wait_for 120 "Kourier answers for $ISVC_HOST" \
    curl -fsS -H "Host: $ISVC_HOST" "http://127.0.0.1:$LOCAL_PORT/v2/models/$MODEL/ready"
  only_version "$(tally 20)" "$v1" || die "not every answer came from v$v1"
  wait_for 120 "ArgoCD: $MODELS_APP Synced/Healthy" app_is Synced/Healthy

  step "push v$v2: a canary, split by Knative"
  release "$v2"
  wait_state "$SYNC_TIMEOUT" "CI started the canary of v$v2" canary_of "$v2"
  local percent rev2 split
  percent="$(state_of percent)"
  wait_cluster_serves_git
  [[ "$percent" =~ ^[0-9]+$ ]] || die "status.yaml gives no canary percent ($STATE)"
  wait_for "$READY_TIMEOUT" "a second revision ready, holding $percent% of the traffic" \
    canary_split "$percent" "$rev1"
  rev2="$(isvc_jsonpath '{.status.components.predictor.latestReadyRevision}')"
  split="$(traffic)"
  info "traffic: $split"
  [[ "$rev2" != "$rev1" && "$split" == *"$rev2=$percent=true "* ]] ||
    die "expected $rev2 (new) at $percent% and $rev1 at $((100 - percent))%, got: $split"
  share_ok "$(tally 200)" "$v2" "$percent" || die "the answers do not show the $percent% split"

  step "the rollout advances v$v2 to 100% on the metrics Prometheus scrapes"
  rm -f "$WORK_DIR/stop-load"
  forwards
  v2_traffic load "$WORK_DIR/stop-load" >"$LOG_DIR/load.log" 2>&1 &
  LOAD_PID=$!
  info "sending traffic in the background (tally every 30 s in $LOG_DIR/load.log)"
  local start=$SECONDS
  until sync_person && released "$v2"; do
    ((SECONDS - start <= ROLLOUT_TIMEOUT)) || die "the canary of v$v2 did not reach 100% in ${ROLLOUT_TIMEOUT}s ($STATE)"
    [[ "$(state_of action)" != rollback ]] || die "the rollout rolled back the good v$v2 ($STATE)"
    info "gitops: $STATE; cluster: $(traffic)"
    forwards
    kill -0 "$LOAD_PID" 2>/dev/null || {
      v2_traffic load "$WORK_DIR/stop-load" >>"$LOG_DIR/load.log" 2>&1 &
      LOAD_PID=$!
    }
    sleep 20
  done
  info "CI finalized v$v2 (after $((SECONDS - start))s): $STATE"
  touch "$WORK_DIR/stop-load"
  wait "$LOAD_PID" 2>/dev/null || true
  LOAD_PID=""
  wait_cluster_serves_git
  wait_for "$READY_TIMEOUT" "all traffic on the newest revision" isvc_rolled_out
  local rev_stable
  rev_stable="$(isvc_jsonpath '{.status.components.predictor.latestReadyRevision}')"
  only_version "$(tally 20)" "$v2" || die "not every answer came from v$v2"
  wait_for "$SYNC_TIMEOUT" "ArgoCD: $MODELS_APP Synced/Healthy" app_is Synced/Healthy

  step "push v$v3 (broken), forced past the gate: ArgoCD Degraded, rollback to v$v2"
  release "$v3" "$FORCE_REASON"
  wait_state "$SYNC_TIMEOUT" "CI started the forced canary of v$v3" canary_or_rollback_of "$v3"
  wait_cluster_serves_git
  local rev_bad
  wait_for "$READY_TIMEOUT" "KServe created the v$v3 revision" revision_created_after "$rev_stable"
  rev_bad="$(isvc_jsonpath '{.status.components.predictor.latestCreatedRevision}')"
  info "v$v3 runs as revision $rev_bad"
  wait_for "$READY_TIMEOUT" "ArgoCD reports $MODELS_APP Degraded (the revision failed)" app_is '*/Degraded'
  info "ArgoCD: $(kubectl -n argocd get application "$MODELS_APP" -o jsonpath='{.status.health.message}' 2>/dev/null || true)"
  wait_state "$SYNC_TIMEOUT" "CI rolled back to v$v2 and wrote it back into the release file" rolled_back_to "$v2"
  local author
  author="$(git -C "$WORK_DIR/person" log -1 --format=%an -- "gitops/models/$MODEL/release.yaml")"
  [[ "$author" == "sluice-ci" ]] || die "release.yaml was last written by '$author', expected sluice-ci"
  info "release.yaml says version $v2 again, written by $author"
  wait_cluster_serves_git
  wait_for "$READY_TIMEOUT" "no traffic on $rev_bad" no_traffic_on "$rev_bad"
  split="$(traffic)"
  info "traffic: $split (v$v2 was $rev_stable)"
  only_version "$(tally 40)" "$v2" || die "after the rollback not every answer came from v$v2"
  wait_for "$SYNC_TIMEOUT" "ArgoCD: $MODELS_APP Synced/Healthy again" app_is Synced/Healthy
  git -C "$WORK_DIR/person" log --format='  %h %an: %s' -n 12
  end_step
}

main "$@"
