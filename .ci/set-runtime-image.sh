#!/usr/bin/env bash
# Point the ClusterServingRuntime at another runtime image (the image workflow commits the result):
#   .ci/set-runtime-image.sh IMAGE [FILE]     FILE: gitops/platform/clusterservingruntime.yaml
# Rewrites the one `image:` line in place, so comments and layout stay as written, then checks
# that the YAML parses and its container names exactly IMAGE.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ $# -gt 2 ]; then echo "usage: $0 IMAGE [FILE]" >&2; exit 2; fi
image="$1"
file="${2:-gitops/platform/clusterservingruntime.yaml}"
[[ "$image" =~ ^[a-z0-9./_-]+:[A-Za-z0-9._-]+$ ]] || { echo "not an image reference with a tag: $image" >&2; exit 2; }
count="$(grep -cE '^[[:space:]]+image:[[:space:]]' "$file" || true)"
[ "$count" = 1 ] || { echo "$file: expected one image: line, found $count" >&2; exit 1; }
sed -i -E "s|^([[:space:]]+image:[[:space:]]).*$|\\1$image|" "$file"
python3 - "$file" "$image" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
images = [c.get("image") for c in doc["spec"]["containers"]]
sys.exit(0 if images == [sys.argv[2]] else f"{sys.argv[1]}: containers name {images}, not {sys.argv[2]}")
PY
echo "$file: $image"
