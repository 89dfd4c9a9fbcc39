"""Container entry point: `python -m serving --model-dir /mnt/models --http-port 8080 --grpc-port 8081`.

This is the image's CMD and the command the integration tests start, so what is tested is what ships.
KServe's conventional underscore spellings (--model_dir, --model_name, --http_port, --grpc_port) are
accepted too, so a ServingRuntime can pass `--model_name={{.Name}}`.
"""

from __future__ import annotations

import os

# One OpenMP thread per inference unless told otherwise: concurrency comes from requests, and on a
# small CPU limit xgboost's OpenMP threads spin against each other and the event loop (measured on
# 2 cores: 41 ms -> 15 ms per 1-row predict). Must be set before xgboost's libgomp is loaded.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from serving.http_limits import DEFAULT_MAX_ROWS, LIMIT_ENV, limits_from_env
from serving.provenance import VERSION_ENV
from serving.workers import START_WINDOW, START_WINDOW_ENV, WORKERS_ENV, is_worker, supervise


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving", description="Sluice KServe V2 runtime for MLflow models")
    p.add_argument("--model-dir", "--model_dir", type=Path, default=Path("/mnt/models"))
    p.add_argument("--model-name", "--model_name", default=os.environ.get("SLUICE_MODEL_NAME", "rossmann"))
    p.add_argument(
        "--model-version",
        default=None,
        help=f"registered version to report (default: ${VERSION_ENV}, else sluice.json, else 'unknown')",
    )
    p.add_argument("--host", default="0.0.0.0", help="HTTP and gRPC listen address")
    p.add_argument("--http-port", "--http_port", type=int, default=8080)
    p.add_argument("--grpc-port", "--grpc_port", type=int, default=8081)
    p.add_argument("--max-rows", type=int, default=int(os.environ.get("SLUICE_MAX_ROWS", DEFAULT_MAX_ROWS)))
    p.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get(WORKERS_ENV, "1")),
        help=f"runtime processes behind the one HTTP port, one per core the pod has (default ${WORKERS_ENV} "
        "or 1); their metrics are summed on /metrics",
    )
    limits = limits_from_env(os.environ)
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=limits.max_body_bytes,
        help=f"413 for larger request bodies, before they are read (default ${LIMIT_ENV['max_body_bytes']} "
        f"or {limits.max_body_bytes}); also gRPC's message limit",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=limits.header_timeout,
        help=f"seconds for a request's headers to arrive (default ${LIMIT_ENV['header_timeout']} "
        f"or {limits.header_timeout:g})",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=limits.body_timeout,
        help=f"seconds for a request's body to arrive (default ${LIMIT_ENV['body_timeout']} "
        f"or {limits.body_timeout:g})",
    )
    p.add_argument(
        "--idle-timeout",
        type=int,
        default=limits.idle_timeout,
        help=f"seconds an idle keep-alive connection stays open (default ${LIMIT_ENV['idle_timeout']} "
        f"or {limits.idle_timeout})",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1 (got {args.workers})")
    if args.workers > 1 and not is_worker():
        window = float(os.environ.get(START_WINDOW_ENV, START_WINDOW))
        return supervise(list(sys.argv[1:] if argv is None else argv), args.workers, args.host, args.http_port, window)
    from serving.http_limits import HttpLimits
    from serving.server import ServeOptions, serve  # heavy imports (kserve, mlflow) after --help

    return serve(
        ServeOptions(
            model_dir=args.model_dir,
            model_name=args.model_name,
            model_version=args.model_version,
            host=args.host,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            max_rows=args.max_rows,
            limits=HttpLimits(
                max_body_bytes=args.max_body_bytes,
                header_timeout=args.header_timeout,
                body_timeout=args.body_timeout,
                idle_timeout=args.idle_timeout,
            ),
        )
    )


if __name__ == "__main__":
    sys.exit(main())
