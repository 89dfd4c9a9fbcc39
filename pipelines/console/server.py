"""Run the console with uvicorn: `sluice console` in a shell, `python -m pipelines.console` under
`sluice up` (pipelines/platform/console.py)."""

from __future__ import annotations

import argparse
import logging

from pipelines.config import Settings, load_settings


def serve(settings: Settings, host: str, port: int) -> None:
    import os

    import uvicorn

    # A page waits on MLflow: when it is down, say so within seconds instead of retrying for minutes
    # (MLflow's client defaults), unless the person set their own.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    # MLflow lists and downloads run artifacts (the drift reports) from S3 itself.
    for key, value in settings.aws_env().items():
        os.environ.setdefault(key, value)

    from pipelines.console.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # access_log off: one line per client error comes from the app itself.
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)


def cmd_console(args: argparse.Namespace, settings: Settings) -> int:
    host = args.host or settings.console_host
    port = args.port or settings.console_port
    print(f"sluice console: http://{host}:{port}/ (read-only; Ctrl-C stops it)", flush=True)
    serve(settings, host, port)
    return 0


def main() -> int:
    # The same arguments as `sluice console` (pipelines/cli.py).
    parser = argparse.ArgumentParser(prog="python -m pipelines.console")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    return cmd_console(parser.parse_args(), load_settings())
