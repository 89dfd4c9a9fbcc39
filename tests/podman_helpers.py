"""Building and running the project's images with podman in tests: the receiver's
(tests/test_inference_log_image.py) and the pipelines image (tests/test_pipelines_image.py).

The runtime image's tests (tests/test_image.py) keep their own engine choice, Docker first.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def dockerfile_args(path: Path) -> dict[str, str]:
    """The `ARG NAME=default` lines of a Dockerfile."""
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", path.read_text(), flags=re.M))


def podman_env() -> dict[str, str]:
    """The environment podman runs with here (skips the test when podman is not installed): on these
    machines crun cannot run, so .ci/containers.conf selects runc (as .ci/build-image.sh does)."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (.ci/run installs it)")
    conf = os.environ.get("CONTAINERS_CONF") or (str(ROOT / ".ci" / "containers.conf") if shutil.which("runc") else "")
    return {**os.environ, **({"CONTAINERS_CONF": conf} if conf else {})}


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = podman_env()
    proc = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        out = proc.stdout[-2000:] + proc.stderr[-3000:]
        raise AssertionError(f"podman {' '.join(args)} -> {proc.returncode}\n{out}")
    return proc


def build_image(dockerfile: str, name: str, tag: str, timeout: float) -> str:
    """Build `dockerfile` as `make image-*` does (.ci/build-image.sh with podman); returns the tag."""
    env = podman_env() | {
        "SLUICE_IMAGE_ENGINE": "podman",
        "SLUICE_IMAGE_DOCKERFILE": dockerfile,
        "SLUICE_IMAGE_NAME": name,
    }
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(ROOT / ".ci" / "build-image.sh"), tag], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    print(f"\nimage {tag} built in {time.monotonic() - started:.1f} s")
    return tag


@contextmanager
def removed_after(prefix: str) -> Iterator[str]:
    """A fresh container name, its container removed afterwards whatever happened."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    try:
        yield name
    finally:
        podman("rm", "-f", "--time", "0", name, check=False)


def answers(url: str, timeout: float = 2) -> bool:
    """True when `url` answers 200."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False
