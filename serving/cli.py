"""`sluice serve`: fetch a model (registry version/alias, storage URI or local directory) and serve it
with the same runtime the container runs (serving.server.serve); or, with `--gitops REPO`, serve
what that repository's gitops/ declares at HEAD, canary included (serving.gitops_preview)."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from serving.http_limits import limits_from_env
from serving.server import ServeOptions, serve
from serving.source import LocalModel, fetch_registered, fetch_uri

log = logging.getLogger(__name__)


def _local_model(args: argparse.Namespace, settings: Any, name: str) -> LocalModel:
    cache = settings.state_dir / "models"
    if args.model_dir is not None:
        if not (args.model_dir / "MLmodel").is_file():
            raise SystemExit(f"sluice serve: {args.model_dir} is not an MLflow model directory (no MLmodel)")
        return LocalModel(args.model_dir, None)
    if args.model_uri:
        return fetch_uri(args.model_uri, cache, settings.aws_env())
    if args.version or args.alias:
        return fetch_registered(settings.tracking_uri, cache, name, args.version, args.alias, settings.aws_env())
    raise SystemExit("sluice serve: say what to serve: --version V, --alias A, --model-uri URI or --model-dir DIR")


def cmd_serve(args: argparse.Namespace, settings: Any) -> int:
    if getattr(args, "gitops", None):
        from serving.gitops_preview import DEFAULT_POLL_SECONDS, PreviewOptions, serve_gitops

        poll = getattr(args, "poll_interval", None)
        options = PreviewOptions(
            repo=args.gitops,
            model=args.model,  # None: every model with a manifest under gitops/models/
            host=args.host,
            http_port=args.port,
            grpc_port=args.grpc_port,
            max_rows=args.max_rows,
            poll_seconds=DEFAULT_POLL_SECONDS if poll is None else poll,
        )
        return serve_gitops(options, settings.state_dir / "models", settings.aws_env())
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as `python -m serving` does (see serving/__main__.py)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    name = args.model or settings.model_name
    local = _local_model(args, settings, name)
    return serve(
        ServeOptions(
            model_dir=local.model_dir,
            model_name=name,
            model_version=local.version,
            host=args.host,
            http_port=args.port,
            grpc_port=args.grpc_port,
            max_rows=args.max_rows,
            limits=limits_from_env(os.environ),  # SLUICE_MAX_BODY_BYTES etc. (flags: python -m serving)
        )
    )
