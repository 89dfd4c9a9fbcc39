"""The runtime image: size, build time (cold and warm), start-to-ready as a container.

Builds with .ci/build-image.sh (what `make image` runs; Docker if an engine answers, else podman with
stand-in bases when no registry answers). Rounds alternate, so machine noise hits both sides alike:

  build cold        --no-cache: every layer rebuilt (uv's download cache mount stays warm)
  build warm        nothing changed: every layer from cache
  ready, container  `run` of the image with a quick model at /mnt/models -> /v2/models/m/ready 200
  ready, host       the same CMD (`python -m serving ...`) from the project's .venv, for scale, with
                    its bytecode cached (PYTHONDONTWRITEBYTECODE unset, one untimed start first)

    uv run python benchmarks/image.py [--rounds 3] [--ready-only]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
TAG = "localhost/sluice-runtime:bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _engine() -> tuple[str, dict[str, str]]:
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return "docker", {}
    conf = os.environ.get("CONTAINERS_CONF") or str(REPO_ROOT / ".ci" / "containers.conf")
    return "podman", {"CONTAINERS_CONF": conf}


def build(extra: str = "") -> float:
    engine, env = _engine()
    started = time.monotonic()
    subprocess.run(
        ["bash", str(REPO_ROOT / ".ci" / "build-image.sh"), TAG],
        env={**os.environ, **env, "SLUICE_IMAGE_ENGINE": engine, "BUILD_ARGS": extra},
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


def _cpu_seconds(pid: int) -> float:
    """user + system CPU of a process (all its threads) so far: contention on a shared machine stretches
    wall time, not this."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_ready(url: str, alive: Callable[[], bool], started: float) -> float:
    while time.monotonic() - started < 180:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        if not alive():
            raise RuntimeError("server exited before it was ready")
        time.sleep(0.05)
    raise RuntimeError("not ready after 180 s")


def ready_container(model_dir: Path) -> tuple[float, float]:
    engine, env = _engine()
    port, name = _free_port(), f"sluice-bench-{os.getpid()}"
    full_env = {**os.environ, **env}
    started = time.monotonic()
    subprocess.run(
        [engine, "run", "--detach", "--name", name, "--read-only", "--tmpfs", "/tmp", "--env",
         "SLUICE_MODEL_VERSION=1", "--volume", f"{model_dir}:/mnt/models:ro", "--publish",
         f"127.0.0.1:{port}:8080", TAG],
        env=full_env, check=True, capture_output=True,
    )  # fmt: skip

    def alive() -> bool:
        out = subprocess.run([engine, "inspect", "--format", "{{.State.Running}}", name], env=full_env,
                             capture_output=True, text=True)  # fmt: skip
        return out.stdout.strip() == "true"

    try:
        wall = _wait_ready(f"http://127.0.0.1:{port}/v2/models/rossmann/ready", alive, started)
        pid = subprocess.run([engine, "inspect", "--format", "{{.State.Pid}}", name], env=full_env,
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        return wall, _cpu_seconds(int(pid))
    finally:
        subprocess.run([engine, "rm", "-f", "--time", "0", name], env=full_env, capture_output=True)


def _host_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def ready_host(model_dir: Path) -> tuple[float, float]:
    port, grpc = _free_port(), _free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", "--model-dir", str(model_dir), "--http-port", str(port),
         "--grpc-port", str(grpc)],
        cwd=REPO_ROOT, env={**_host_env(), "SLUICE_MODEL_VERSION": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/v2/models/rossmann/ready"
        return _wait_ready(url, lambda: proc.poll() is None, started), _cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def quick_model(folder: Path) -> Path:
    from model.pyfunc import save_pyfunc
    from model.synthetic import generate
    from model.training import TrainConfig, train

    path = folder / "model"
    save_pyfunc(train(generate(stores=10, days=120, seed=3), TrainConfig.quick(), progress=False), path)
    for p in [folder, path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if p.is_dir() else 0))
    return path


def summary(name: str, values: list[float]) -> str:
    return (f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} - {max(values):.1f} | "
            f"{len(values)} |")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ready-only", action="store_true", help="no builds: time starts of the built image")
    args = parser.parse_args()
    engine, env = _engine()
    cold: list[float] = []
    warm: list[float] = []
    for _ in range(0 if args.ready_only else args.rounds):
        cold.append(build("--no-cache"))
        warm.append(build())
    size = subprocess.run([engine, "image", "inspect", "--format", "{{.Size}}", TAG], env={**os.environ, **env},
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    container: list[tuple[float, float]] = []
    host: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="sluice-bench-image-") as tmp:
        Path(tmp).chmod(0o755)
        model_dir = quick_model(Path(tmp))
        ready_host(model_dir)  # writes the host's bytecode
        for i in range(args.rounds + 2):
            order = (ready_container, ready_host) if i % 2 == 0 else (ready_host, ready_container)
            for fn in order:
                (container if fn is ready_container else host).append(fn(model_dir))
    print(f"engine {engine}; image {TAG}: {int(size) / 1e6:.1f} MB ({size} bytes); load average {os.getloadavg()}")
    print("| figure (s) | median | spread | rounds |\n|---|---:|---:|---:|")
    for name, values in (
        ("build cold (--no-cache)", cold),
        ("build warm (cached)", warm),
        ("start-to-ready, container (wall)", [w for w, _ in container]),
        ("start-to-ready, container (CPU of the server)", [c for _, c in container]),
        ("start-to-ready, host .venv (wall)", [w for w, _ in host]),
        ("start-to-ready, host .venv (CPU of the server)", [c for _, c in host]),
    ):
        if values:
            print(summary(name, values))
    ratio = statistics.median(w for w, _ in container) / statistics.median(w for w, _ in host)
    print(f"container / host start-to-ready (wall): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
