#!/usr/bin/env bash
# Point gitops/ at another build of one of the project's images (the image workflow commits the
# result):
#   .ci/set-image.sh IMAGE [FILE...]     default FILEs: gitops/platform/*.yaml
# IMAGE is REGISTRY/OWNER/NAME:TAG; every `image:` line naming NAME (sluice-runtime,
# sluice-inference-log, sluice-pipelines) is rewritten in place, so comments and layout stay as
# written, and every other line is left alone. Then each changed file must parse and every
# container of that NAME must name exactly IMAGE. Exit 1 when no line names NAME.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then echo "usage: $0 IMAGE [FILE...]" >&2; exit 2; fi
image="$1"
shift
[[ "$image" =~ ^[a-z0-9._-]+(/[a-z0-9._-]+)+:[A-Za-z0-9._-]+$ ]] || { echo "not an image reference with a tag: $image" >&2; exit 2; }
name="${image%%:*}"
name="${name##*/}"
if [ $# -eq 0 ]; then set -- gitops/platform/*.yaml; fi
pattern="^([[:space:]]+image:[[:space:]]+)[a-z0-9._/-]*/${name}:[A-Za-z0-9._-]+[[:space:]]*$"
changed=()
for file in "$@"; do
  if grep -qE "$pattern" "$file"; then
    sed -i -E "s|$pattern|\\1$image|" "$file"
    changed+=("$file")
  fi
done
[ "${#changed[@]}" -gt 0 ] || { echo "no image: line names $name in $*" >&2; exit 1; }
python3 - "$image" "$name" "${changed[@]}" <<'PY'
import sys, yaml

image, name, files = sys.argv[1], sys.argv[2], sys.argv[3:]

def containers(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from containers(value)
    elif isinstance(node, list):
        for value in node:
            yield from containers(value)

for path in files:
    for doc in yaml.safe_load_all(open(path)):
        for c in containers(doc):
            ref = str(c.get("image", ""))
            if ref.split(":", 1)[0].rsplit("/", 1)[-1] == name and ref != image:
                sys.exit(f"{path}: container {c.get('name')} names {ref}, not {image}")
PY
for file in "${changed[@]}"; do echo "$file: $image"; done
