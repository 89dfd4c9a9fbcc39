#!/usr/bin/env bash
# Names of the runtime image, as GitHub step outputs (KEY=value lines; `tags` is multi-line):
#   .ci/image-tags.sh IMAGE          e.g. IMAGE=ghcr.io/OWNER/sluice-runtime (lower-cased here)
# version      the project version (pyproject.toml)
# lock_sha256  sha256 of uv.lock (the image's dev.sluice.uv-lock.sha256 label)
# local        IMAGE:<version>-<lock12>: what `make image` tags
# reference    IMAGE:<version>-<lock12>-<commit7>: one build, what gitops/ names
# tags         IMAGE:<version>, the local tag and the reference
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { echo "usage: $0 IMAGE" >&2; exit 2; }
image="${1,,}"  # registries want lower-case repository names; GitHub owners may have capitals
version="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
lock_sha256="$(sha256sum uv.lock | cut -d' ' -f1)"
commit="$(git rev-parse --short=7 HEAD 2>/dev/null || echo nogit)"
local_tag="$image:$version-${lock_sha256:0:12}"
reference="$local_tag-$commit"
printf 'version=%s\nlock_sha256=%s\nlocal=%s\nreference=%s\n' "$version" "$lock_sha256" "$local_tag" "$reference"
printf 'tags<<EOF\n%s\n%s\n%s\nEOF\n' "$image:$version" "$local_tag" "$reference"
