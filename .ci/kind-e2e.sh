#!/usr/bin/env bash
# End-to-end test of Sluice on a real Kind cluster. Needs a machine with a Docker engine.
#
#   local platform (LocalStack S3 + MLflow on the host)  ->  terraform/cluster (Kind, cert-manager,
#   Knative + Kourier, KServe, ArgoCD)  ->  runtime image into Kind  ->  train  ->  sluice promote
#   into a bare git remote served by `git daemon`  ->  ArgoCD Synced/Healthy  ->  InferenceService
#   Ready  ->  V2 infer through Kourier  ->  teardown.
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
MODEL_VERSION="${SLUICE_E2E_VERSION:-}"
TRAIN_CMD="${SLUICE_E2E_TRAIN_CMD:-make train}"
HOST_ADDR="${SLUICE_E2E_HOST_ADDR:-}"
GIT_PORT="${SLUICE_E2E_GIT_PORT:-9418}"
LOCAL_PORT="${SLUICE_E2E_INGRESS_PORT:-18080}"
SYNC_TIMEOUT="${SLUICE_E2E_SYNC_TIMEOUT:-900}"
READY_TIMEOUT="${SLUICE_E2E_READY_TIMEOUT:-900}"
WORK_DIR="${SLUICE_E2E_WORKDIR:-}"

KEEP=0
SKIP_BUILD=0
CHECK_ONLY=0

GIT_DAEMON_PID=""
PORT_FORWARD_PID=""
PLATFORM_STARTED=0
CLUSTER_STARTED=0
STEP_NO=0
readonly TOTAL_STEPS=10

usage() {
  cat <<EOF
Usage: .ci/kind-e2e.sh [--keep] [--skip-build] [--check] [--help]

End-to-end test of Sluice on a Kind cluster (needs Docker, kind, kubectl, terraform, helm, git,
uv, make, curl). It starts the local platform (make up), creates the cluster with
terraform/cluster, loads the runtime image built from serving/Dockerfile, trains a model,
promotes it with \`sluice promote --push\` into a bare git remote that ArgoCD reads through
\`git daemon\`, waits until ArgoCD reports Synced/Healthy and the InferenceService is Ready, sends
an Open Inference Protocol (V2) request through Kourier, and tears everything down.

Options:
  --keep        leave the cluster, the platform and the work directory running for debugging
  --skip-build  do not build the runtime image (it must already exist in the local Docker engine)
  --check       only check the prerequisites, then exit
  -h, --help    show this help

Environment (defaults in brackets):
  SLUICE_E2E_CLUSTER        Kind cluster name [sluice-e2e]
  SLUICE_MODEL_NAME         registered model / InferenceService name [rossmann]
  SLUICE_E2E_NAMESPACE      namespace of the InferenceService [sluice-serving]
  SLUICE_E2E_S3_SECRET      name of the S3 credentials Secret [sluice-s3]
  SLUICE_RUNTIME_IMAGE      runtime image tag [read from the ServingRuntime in gitops/]
  SLUICE_E2E_VERSION        model version to promote [the newest registered version]
  SLUICE_E2E_TRAIN_CMD      command that trains and registers a version [make train]
  SLUICE_E2E_HOST_ADDR      host address reachable from pods [kind network gateway on Linux,
                            host.docker.internal on Docker Desktop]; LocalStack (SLUICE_S3_HOST)
                            and git daemon listen on it
  SLUICE_E2E_GIT_PORT       git daemon port [9418]
  SLUICE_E2E_INGRESS_PORT   local port forwarded to Kourier [18080]
  SLUICE_E2E_SYNC_TIMEOUT   seconds to wait for ArgoCD Synced/Healthy [900]
  SLUICE_E2E_READY_TIMEOUT  seconds to wait for the InferenceService [900]
  SLUICE_E2E_WORKDIR        work directory (state, kubeconfig, git remote) [mktemp -d]

Only committed files take part: the bare remote is cloned from this repository's HEAD.
EOF
}

# ---- output ----------------------------------------------------------------------------------
ts() { date +%H:%M:%S; }
step() {
  STEP_NO=$((STEP_NO + 1))
  printf '\n\033[1m[%s] (%d/%d) %s\033[0m\n' "$(ts)" "$STEP_NO" "$TOTAL_STEPS" "$*"
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
  need kind "go install sigs.k8s.io/kind@latest, or https://kind.sigs.k8s.io/docs/user/quick-start/#installation" || missing=1
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

diagnostics() {
  [[ $CLUSTER_STARTED -eq 1 ]] || return 0
  warn "collecting diagnostics"
  {
    kubectl get nodes -o wide || true
    kubectl get pods -A || true
    kubectl -n argocd get applications -o wide || true
    kubectl -n argocd get applications -o jsonpath='{range .items[*]}{.metadata.name}: {.status.conditions}{"\n"}{end}' || true
    kubectl -n "$SERVING_NAMESPACE" get inferenceservices,ksvc,revisions,pods || true
    kubectl -n "$SERVING_NAMESPACE" describe inferenceservice "$MODEL" || true
    kubectl -n "$SERVING_NAMESPACE" logs -l "serving.kserve.io/inferenceservice=$MODEL" --all-containers --tail=80 || true
    kubectl get events -A --sort-by=.lastTimestamp | tail -n 40 || true
    helm list -A || true
  } >&2
}

cleanup() {
  local rc=$?
  set +e
  [[ $rc -ne 0 ]] && diagnostics
  [[ -n "$PORT_FORWARD_PID" ]] && kill "$PORT_FORWARD_PID" 2>/dev/null
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
  [[ -n "$WORK_DIR" && -d "$WORK_DIR" && -z "${SLUICE_E2E_WORKDIR:-}" ]] && rm -rf "$WORK_DIR"
  if [[ $rc -eq 0 ]]; then
    printf '\n[%s] kind e2e PASSED\n' "$(ts)"
  else
    printf '\n[%s] kind e2e FAILED (exit %d); rerun with --keep to inspect the cluster\n' "$(ts)" "$rc" >&2
  fi
  exit "$rc"
}

# ---- gitops introspection (the manifests are the source of truth for names) ------------------
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

root_app_name() {
  # The root Application (app of apps) among the bootstrap manifests.
  py "$REPO_ROOT/argocd/bootstrap" <<'PY'
import pathlib, sys, yaml
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.y*ml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "Application":
            print(doc["metadata"]["name"])
            sys.exit(0)
sys.exit("no Application under argocd/bootstrap/")
PY
}

point_argocd_at() {
  # Rewrite every Application's repoURL/targetRevision under argocd/ in the e2e checkout, so the
  # child Applications (synced from Git by the root one) also read the local git daemon.
  py "$WORK_DIR/checkout/argocd" "$1" "$2" <<'PY'
import pathlib, re, sys
root, url, revision = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
for path in sorted(root.rglob("*.y*ml")):
    text = path.read_text()
    if "kind: Application" not in text:
        continue
    new = re.sub(r"(?m)^(\s*repoURL:\s*).*$", lambda m: m.group(1) + url, text)
    new = re.sub(r"(?m)^(\s*targetRevision:\s*).*$", lambda m: m.group(1) + revision, new)
    if new != text:
        path.write_text(new)
        print(f"  {path.relative_to(root.parent)} -> {url} @ {revision}")
PY
}

git_storage_uri() {
  # storageUri of the model's InferenceService as rendered in the e2e checkout.
  py "$WORK_DIR/checkout/gitops" "$MODEL" <<'PY'
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

latest_version() {
  py "$MODEL" <<'PY'
import sys
from mlflow import MlflowClient
from pipelines.config import load_settings
client = MlflowClient(tracking_uri=load_settings().tracking_uri)
versions = client.search_model_versions(f"name='{sys.argv[1]}'")
if not versions:
    sys.exit(f"no registered versions of {sys.argv[1]}")
print(max(int(v.version) for v in versions))
PY
}

apps_synced_healthy() {
  # Every ArgoCD Application reports Synced and Healthy.
  local out
  out="$(kubectl -n argocd get applications -o jsonpath='{range .items[*]}{.status.sync.status}/{.status.health.status} {end}')"
  [[ -n "$out" ]] || return 1
  local state
  for state in $out; do
    [[ "$state" == "Synced/Healthy" ]] || return 1
  done
}

isvc_serves_git() {
  # The InferenceService in the cluster carries the storageUri that Git declares.
  local want="$1" have
  have="$(kubectl -n "$SERVING_NAMESPACE" get inferenceservice "$MODEL" -o jsonpath='{.spec.predictor}')"
  [[ "$have" == *"$want"* ]]
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
  mkdir -p "$WORK_DIR"
  export KUBECONFIG="$WORK_DIR/kubeconfig"
  export TF_DATA_DIR="$WORK_DIR/terraform-data"
  trap cleanup EXIT
  info "work directory: $WORK_DIR"

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

  step "local platform (LocalStack S3 + MLflow) listening on $HOST_ADDR"
  # LocalStack must be reachable from the pods' storage initializer: bind it to the host address
  # the cluster sees (on Docker Desktop 0.0.0.0, since host.docker.internal is not a local address).
  if [[ "$HOST_ADDR" == "host.docker.internal" ]]; then
    export SLUICE_S3_HOST="${SLUICE_S3_HOST:-0.0.0.0}"
  else
    export SLUICE_S3_HOST="${SLUICE_S3_HOST:-$HOST_ADDR}"
  fi
  local s3_port="${SLUICE_S3_PORT:-4566}"
  PLATFORM_STARTED=1
  (cd "$REPO_ROOT" && make up)
  curl -fsS "http://${SLUICE_S3_HOST/0.0.0.0/127.0.0.1}:${s3_port}/_localstack/health" >/dev/null ||
    die "LocalStack does not answer on ${SLUICE_S3_HOST}:${s3_port}"
  info "LocalStack answers on ${SLUICE_S3_HOST}:${s3_port}"

  step "bare git remote served by git daemon on git://$HOST_ADDR:$GIT_PORT"
  local branch
  branch="$(git -C "$REPO_ROOT" rev-parse --abbrev-ref HEAD)"
  [[ "$branch" != "HEAD" ]] || branch="main"
  mkdir -p "$WORK_DIR/git"
  git clone --quiet --bare "$REPO_ROOT" "$WORK_DIR/git/sluice.git"
  git -C "$WORK_DIR/git/sluice.git" symbolic-ref HEAD "refs/heads/$branch"
  git clone --quiet --branch "$branch" "$WORK_DIR/git/sluice.git" "$WORK_DIR/checkout"
  git -C "$WORK_DIR/checkout" config user.name "sluice-e2e"
  git -C "$WORK_DIR/checkout" config user.email "sluice-e2e@localhost"
  local daemon_listen="$HOST_ADDR"
  [[ "$HOST_ADDR" == "host.docker.internal" ]] && daemon_listen="0.0.0.0"
  git daemon --reuseaddr --export-all --base-path="$WORK_DIR/git" \
    --listen="$daemon_listen" --port="$GIT_PORT" "$WORK_DIR/git" &
  GIT_DAEMON_PID=$!
  local git_url="git://$HOST_ADDR:$GIT_PORT/sluice.git"
  point_argocd_at "$git_url" "$branch"
  if [[ -n "$(git -C "$WORK_DIR/checkout" status --porcelain)" ]]; then
    git -C "$WORK_DIR/checkout" commit --quiet -am "e2e: ArgoCD reads the local git daemon"
    git -C "$WORK_DIR/checkout" push --quiet origin "$branch"
  fi
  wait_for 30 "git daemon serves $git_url (branch $branch)" \
    git ls-remote "git://${daemon_listen/0.0.0.0/127.0.0.1}:$GIT_PORT/sluice.git" "$branch"

  step "Kind cluster '$CLUSTER_NAME' and the runtime image"
  local tf=(terraform -chdir="$REPO_ROOT/terraform/cluster")
  local tf_vars=(
    -var "cluster_name=$CLUSTER_NAME"
    -var "kubeconfig_path=$KUBECONFIG"
    -var "s3_endpoint=$HOST_ADDR:$s3_port"
    -var "git_repo_url=$git_url"
    -var "git_revision=$branch"
    -var "serving_namespace=$SERVING_NAMESPACE"
    -var "s3_secret_name=$S3_SECRET_NAME"
    -var "ingress_domain=$INGRESS_DOMAIN"
  )
  local state="-state=$WORK_DIR/terraform.tfstate"
  "${tf[@]}" init -input=false -no-color >/dev/null
  CLUSTER_STARTED=1
  # The cluster first, so the runtime image is in the node before ArgoCD syncs anything.
  "${tf[@]}" apply -input=false -auto-approve -no-color "$state" "${tf_vars[@]}" -target=kind_cluster.this
  if [[ -z "$RUNTIME_IMAGE" ]]; then
    RUNTIME_IMAGE="$(gitops_runtime_image)"
  fi
  info "runtime image: $RUNTIME_IMAGE"
  if [[ "$RUNTIME_IMAGE" == *:latest || "$RUNTIME_IMAGE" != *:* ]]; then
    warn "a :latest (or untagged) image is pulled Always unless imagePullPolicy is IfNotPresent"
  fi
  if [[ $SKIP_BUILD -eq 0 ]]; then
    docker build -f "$REPO_ROOT/serving/Dockerfile" -t "$RUNTIME_IMAGE" "$REPO_ROOT"
  fi
  kind load docker-image "$RUNTIME_IMAGE" --name "$CLUSTER_NAME"

  step "platform on the cluster: cert-manager, Knative + Kourier, KServe, ArgoCD, bootstrap"
  "${tf[@]}" apply -input=false -auto-approve -no-color "$state" "${tf_vars[@]}"

  step "train and register a model version"
  (cd "$REPO_ROOT" && eval "$TRAIN_CMD")
  if [[ -z "$MODEL_VERSION" ]]; then
    MODEL_VERSION="$(latest_version)"
  fi
  info "promoting $MODEL version $MODEL_VERSION"

  step "sluice promote --push into the bare remote"
  sluice promote --model "$MODEL" --version "$MODEL_VERSION" --repo "$WORK_DIR/checkout" --push
  git -C "$WORK_DIR/checkout" log --oneline -n 3
  local want_uri
  want_uri="$(git_storage_uri)"
  [[ -n "$want_uri" ]] || die "the rendered InferenceService has no storageUri"
  info "Git declares storageUri $want_uri"

  step "ArgoCD Synced/Healthy and the InferenceService Ready"
  local app
  app="$(root_app_name)"
  kubectl -n argocd annotate application "$app" argocd.argoproj.io/refresh=normal --overwrite >/dev/null || true
  wait_for "$SYNC_TIMEOUT" "the cluster carries the promoted storageUri" isvc_serves_git "$want_uri"
  wait_for "$SYNC_TIMEOUT" "every ArgoCD Application is Synced/Healthy" apps_synced_healthy
  kubectl -n argocd get applications
  kubectl -n "$SERVING_NAMESPACE" wait "inferenceservice/$MODEL" --for=condition=Ready --timeout="${READY_TIMEOUT}s"
  kubectl -n "$SERVING_NAMESPACE" get inferenceservice "$MODEL"

  step "V2 inference request through Kourier"
  local kourier_ns=""
  local ns
  for ns in knative-serving kourier-system; do
    if kubectl -n "$ns" get service kourier >/dev/null 2>&1; then
      kourier_ns="$ns"
      break
    fi
  done
  [[ -n "$kourier_ns" ]] || die "no Kourier gateway Service (svc/kourier) found"
  kubectl -n "$kourier_ns" port-forward service/kourier "$LOCAL_PORT:80" >"$WORK_DIR/port-forward.log" 2>&1 &
  PORT_FORWARD_PID=$!
  local url host
  url="$(kubectl -n "$SERVING_NAMESPACE" get inferenceservice "$MODEL" -o jsonpath='{.status.components.predictor.url}')"
  host="${url#*://}"
  host="${host%%/*}"
  [[ -n "$host" ]] || host="$MODEL-predictor.$SERVING_NAMESPACE.$INGRESS_DOMAIN"
  info "Host: $host via 127.0.0.1:$LOCAL_PORT -> $kourier_ns/kourier"
  wait_for 60 "Kourier answers for $host" \
    curl -fsS -H "Host: $host" "http://127.0.0.1:$LOCAL_PORT/v2/models/$MODEL/ready"
  sluice generate-data --out "$WORK_DIR/data" --stores 3 --days 60 >/dev/null
  py "http://127.0.0.1:$LOCAL_PORT" "$host" "$MODEL" "$WORK_DIR/data" <<'PY'
"""Build a V2 request from the model's metadata and a few generated rows, send it, check it."""
import json, math, pathlib, sys, urllib.request
import pandas as pd

base, host, model, data_dir = sys.argv[1:5]

def call(path, body=None):
    req = urllib.request.Request(base + path, headers={"Host": host, "Content-Type": "application/json"},
                                 data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())

meta = call(f"/v2/models/{model}")
print("model metadata:", json.dumps(meta)[:400])
data = pathlib.Path(data_dir)
def read(stem):
    return pd.read_csv(next(p for p in data.iterdir() if p.name.startswith(stem)), low_memory=False)
rows = read("train").merge(read("store"), on="Store", how="left")
rows = rows[rows["Open"] == 1].head(5)
# Without input metadata fall back to the raw Kaggle test columns.
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
        values = [float("nan") if v is None else float(v) for v in col]
        values = [None if math.isnan(v) else v for v in values]
    elif dt == "BOOL":
        values = [bool(v) for v in col]
    else:
        values = [int(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else 0 for v in col]
    inputs.append({"name": name, "shape": [len(values)], "datatype": dt, "data": values})
result = call(f"/v2/models/{model}/infer", {"id": "kind-e2e", "inputs": inputs})
outputs = result.get("outputs") or []
assert outputs, f"no outputs in {result}"
predictions = outputs[0]["data"]
assert len(predictions) == len(rows), f"{len(predictions)} predictions for {len(rows)} rows"
assert all(isinstance(p, (int, float)) and math.isfinite(p) for p in predictions), predictions
print(f"{model} answered {len(predictions)} predictions, e.g. {predictions[:3]}")
PY
}

main "$@"
