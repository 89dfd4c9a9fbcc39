#!/usr/bin/env bash
# Local STAND-INS for the runtime image's two base images, for machines where no container registry
# answers (podman cannot pull). Wherever the real images can be pulled (GitHub, a developer's
# Docker), they are used instead and this script is not needed.
#
#   localhost/sluice-standin/python:3.11-slim-bookworm  stands in for python:3.11-slim-bookworm:
#       Debian bookworm (debootstrap --variant=minbase) + python3.11, ca-certificates (with this
#       host's extra CA certificates, so downloads during the build verify behind a TLS proxy) and
#       passwd (useradd), python linked at /usr/local/bin like the official image.
#   localhost/sluice-standin/uv:<version>               stands in for ghcr.io/astral-sh/uv:<version>:
#       FROM scratch + the uv binary from the same version's wheel on PyPI.
#
# Both carry the label sluice.standin.recipe (a hash of this script and the uv version): an image
# with the current recipe is reused, so only the first run pays (about 1.5 min for debootstrap).
# Prints the build arguments that select them: podman build $(.ci/standin-images.sh) ...
# Needs: podman, debootstrap (apt-get install podman buildah runc debootstrap), root, the Debian
# mirror configured for apt on this host, and PyPI (pip download, with a python3 that has pip).
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION="$(sed -n 's/^ARG UV_VERSION=//p' serving/Dockerfile)"
[ -n "$UV_VERSION" ] || { echo "serving/Dockerfile has no 'ARG UV_VERSION=' line" >&2; exit 1; }
PYTHON_STANDIN="localhost/sluice-standin/python:3.11-slim-bookworm"
UV_STANDIN="localhost/sluice-standin/uv:${UV_VERSION}"
RECIPE="$( (cat "$0"; echo "$UV_VERSION") | sha256sum | cut -c1-16)"
LABEL_KEY="sluice.standin.recipe"

log() { echo "standin: $*" >&2; }

current() {  # true when the image exists and was made by this recipe
  [ "$(podman image inspect --format "{{ index .Labels \"$LABEL_KEY\" }}" "$1" 2>/dev/null)" = "$RECIPE" ]
}

# The Debian mirror apt already uses on this host (deb822 or one-line format).
debian_mirror() {
  if [ -n "${STANDIN_DEBIAN_MIRROR:-}" ]; then echo "$STANDIN_DEBIAN_MIRROR"; return; fi
  local uri
  uri="$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
  [ -n "$uri" ] || uri="$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
  [ -n "$uri" ] || { echo "no Debian mirror in the apt sources; set STANDIN_DEBIAN_MIRROR" >&2; exit 1; }
  echo "$uri"
}

WORK=""
cleanup() { [ -z "$WORK" ] || rm -rf "$WORK"; }
trap cleanup EXIT

build_python() {
  WORK="$(mktemp -d)"
  local root="$WORK/rootfs" mirror
  mirror="$(debian_mirror)"
  log "building $PYTHON_STANDIN with debootstrap from $mirror"
  debootstrap --variant=minbase --include=python3.11,ca-certificates,passwd bookworm "$root" "$mirror" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  fi
  chroot "$root" update-ca-certificates >/dev/null
  for name in python3.11 python3 python; do ln -sf /usr/bin/python3.11 "$root/usr/local/bin/$name"; done
  # What debian:bookworm-slim leaves out too: package caches and lists, docs, man pages, locales.
  rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/var/log/*
  tar --numeric-owner -C "$root" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --change "LABEL $LABEL_KEY=$RECIPE" \
    --change 'LABEL org.opencontainers.image.description="LOCAL STAND-IN for python:3.11-slim-bookworm (debootstrap + Debian python3.11)"' \
    - "$PYTHON_STANDIN" >/dev/null
  rm -rf "$WORK"
}

# A python with pip for the download: under `uv run` the first python3 on PATH is the project's
# .venv, which uv creates without pip.
pip_python() {
  local py
  for py in python3 /usr/bin/python3 /usr/local/bin/python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -m pip --version >/dev/null 2>&1; then echo "$py"; return; fi
  done
  echo "standin: no python3 with pip to download the uv wheel (apt-get install python3-pip)" >&2
  exit 1
}

build_uv() {
  local py
  py="$(pip_python)"
  WORK="$(mktemp -d)"
  log "building $UV_STANDIN from the uv==$UV_VERSION wheel"
  "$py" -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_17_x86_64 \
    --python-version 3.11 --dest "$WORK/wheel" "uv==$UV_VERSION"
  mkdir -p "$WORK/ctx"
  "$py" - "$WORK" <<'PY'
import sys, zipfile, pathlib
work = pathlib.Path(sys.argv[1])
[wheel] = (work / "wheel").glob("uv-*.whl")
with zipfile.ZipFile(wheel) as z:
    [name] = [n for n in z.namelist() if n.endswith(".data/scripts/uv")]
    target = work / "ctx" / "uv"
    target.write_bytes(z.read(name))
    target.chmod(0o755)
PY
  printf 'FROM scratch\nCOPY uv /uv\nLABEL %s=%s\nLABEL org.opencontainers.image.description="LOCAL STAND-IN for ghcr.io/astral-sh/uv:%s (binary from the PyPI wheel)"\n' \
    "$LABEL_KEY" "$RECIPE" "$UV_VERSION" >"$WORK/ctx/Containerfile"
  podman build --quiet --pull=never -t "$UV_STANDIN" "$WORK/ctx" >/dev/null
  rm -rf "$WORK"
}

current "$PYTHON_STANDIN" || build_python
current "$UV_STANDIN" || build_uv
echo "--build-arg PYTHON_IMAGE=$PYTHON_STANDIN --build-arg UV_IMAGE=${UV_STANDIN%:*}"
