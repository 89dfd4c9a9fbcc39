"""`python -m pipelines.platform.standin`: the local cluster stand-in (started by `sluice up`)."""

from __future__ import annotations

import os
import sys
import threading
from datetime import datetime

import uvicorn

from pipelines.config import load_settings
from pipelines.platform.standin.controller import Controller
from pipelines.platform.standin.pods import Pods
from pipelines.platform.standin.router import build_app

MAX_REPLICAS = int(os.environ.get("SLUICE_STANDIN_MAX_REPLICAS", "2"))


def say(text: str) -> None:
    print(f"[standin {datetime.now():%H:%M:%S}] {text}", flush=True)


def main() -> int:
    settings = load_settings()
    pods = Pods(
        cache=settings.state_dir / "standin" / "models",
        logs=settings.logs_dir / "standin",
        aws_env=settings.aws_env(),
        max_replicas=MAX_REPLICAS,
        say=say,
    )
    controller = Controller(settings, pods, say)
    stop = threading.Event()
    follower = threading.Thread(
        target=controller.follow, args=(stop, settings.poll_interval), name="follow", daemon=True
    )
    follower.start()
    say(f"following {settings.gitops_url} ({settings.gitops_branch}); V2 at {settings.serve_url}/v2/models/<model>/...")
    try:
        uvicorn.run(
            build_app(controller),
            host=settings.serve_host,
            port=settings.serve_port,
            log_level="warning",
            timeout_graceful_shutdown=10,
        )
    finally:
        stop.set()
        follower.join(timeout=5)
        pods.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
