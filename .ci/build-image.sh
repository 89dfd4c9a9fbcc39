#!/usr/bin/env bash
# Build the runtime image from serving/Dockerfile: `make image` and tests/test_image.py call this.
#   .ci/build-image.sh [TAG]        default TAG: sluice-runtime:<version>-<uv.lock sha256, 12 hex>
# The inference-log receiver's image the same way (`make image-inference-log`):
#   SLUICE_IMAGE_DOCKERFILE=serving/inference_log/Dockerfile SLUICE_IMAGE_NAME=sluice-inference-log
# Docker where an engine answers, else podman. podman uses the real base images when they can be
# pulled (or are present), else the local stand-ins from .ci/standin-images.sh. The image is labelled
# with the full sha256 of uv.lock. Prints the tag on the last line of stdout.
# Env: SLUICE_IMAGE_ENGINE=docker|podman forces an engine; BUILD_ARGS adds arguments to the build.
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKERFILE="${SLUICE_IMAGE_DOCKERFILE:-serving/Dockerfile}"
META="$(.ci/image-tags.sh "${SLUICE_IMAGE_NAME:-sluice-runtime}")"
LOCK_SHA256="$(sed -n 's/^lock_sha256=//p' <<<"$META")"
TAG="${1:-$(sed -n 's/^local=//p' <<<"$META")}"
read -r -a extra <<<"${BUILD_ARGS:-}"

engine="${SLUICE_IMAGE_ENGINE:-}"
if [ -z "$engine" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    engine=docker
  elif command -v podman >/dev/null 2>&1; then
    engine=podman
  else
    echo "neither a Docker engine nor podman: apt-get install podman buildah runc debootstrap" >&2
    exit 2
  fi
fi

if [ "$engine" = docker ]; then
  DOCKER_BUILDKIT=1 docker build -f "$DOCKERFILE" --build-arg "UV_LOCK_SHA256=$LOCK_SHA256" \
    "${extra[@]}" -t "$TAG" . >&2
  echo "$TAG"
  exit 0
fi

# podman: on these machines crun cannot run and the default ulimits cannot be set (.ci/containers.conf).
if [ -z "${CONTAINERS_CONF:-}" ] && command -v runc >/dev/null 2>&1; then
  export CONTAINERS_CONF="$PWD/.ci/containers.conf"
fi
python_image="$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$DOCKERFILE")"
uv_image="$(sed -n 's/^ARG UV_IMAGE=//p' "$DOCKERFILE"):$(sed -n 's/^ARG UV_VERSION=//p' "$DOCKERFILE")"
have() { podman image exists "$1" || timeout "${PULL_TIMEOUT:-60}" podman pull --quiet "$1" >/dev/null 2>&1; }
bases=()
if have "$python_image" && have "$uv_image"; then
  echo "build-image: base images $python_image and $uv_image" >&2
else
  echo "build-image: no registry answers for $python_image / $uv_image: using local stand-ins" >&2
  standin_args="$(.ci/standin-images.sh)" || { echo "build-image: the local stand-ins could not be built (see above)" >&2; exit 1; }
  read -r -a bases <<<"$standin_args"
fi
podman build --network host --pull=never -f "$DOCKERFILE" "${bases[@]}" \
  --build-arg "UV_LOCK_SHA256=$LOCK_SHA256" "${extra[@]}" -t "$TAG" . >&2
echo "$TAG"
