"""`sluice serve`: one model version, served by the runtime the image runs (serving.server.serve).

What to serve: a registered version or alias (resolved through the registry, downloaded with
KServe's storage-initializer code into `<state_dir>/models/<name>/v<version>`), a storage URI, or a
local MLflow model directory. What Git declares, canary included, is served by the embedded
platform's cluster stand-in (`sluice up`), not by this command.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from pipelines.config import Settings
from pipelines.registry import RegistryError, connect, resolve

log = logging.getLogger(__name__)


def fetch_registered(settings: Settings, name: str, ref: str) -> tuple[Path, str]:
    """(model directory, version) of a registered version or alias, downloaded once."""
    from serving.provenance import Provenance, read_provenance, write_provenance
    from serving.source import download

    registry = connect(settings.tracking_uri)
    info = resolve(registry, name, ref)
    uri = registry.download_uri(name, info.version)
    dest = settings.state_dir / "models" / name / f"v{info.version}"
    known = read_provenance(dest) if (dest / "MLmodel").is_file() else None
    if known and known.source_uri == uri and known.version == info.version:
        log.info("model %s version %s already downloaded to %s", name, info.version, dest)
    else:
        log.info("downloading model %s version %s from %s", name, info.version, uri)
        download(uri, dest, settings.aws_env())
        write_provenance(dest, Provenance(name, info.version, uri))
    return dest, info.version


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as `python -m serving` does (see serving/__main__.py)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from serving.http_limits import limits_from_env
    from serving.server import ServeOptions, serve
    from serving.source import fetch_uri

    name = args.model or settings.model_name
    version: str | None = None
    if args.model_dir is not None:
        if not (args.model_dir / "MLmodel").is_file():
            print(f"sluice serve: {args.model_dir} is not an MLflow model directory (no MLmodel)")
            return 2
        model_dir = args.model_dir
    elif args.model_uri:
        local = fetch_uri(args.model_uri, settings.state_dir / "models", settings.aws_env())
        model_dir, version = local.model_dir, local.version
    elif args.version or args.alias:
        try:
            model_dir, version = fetch_registered(settings, name, args.version or args.alias)
        except (LookupError, RegistryError) as exc:
            print(f"sluice serve: {exc}")
            return 2
    else:
        print("sluice serve: say what to serve: --version V, --alias A, --model-uri URI or --model-dir DIR")
        return 2
    return serve(
        ServeOptions(
            model_dir=model_dir,
            model_name=name,
            model_version=version,
            host=args.host,
            http_port=args.port,
            grpc_port=args.grpc_port,
            max_rows=args.max_rows,
            limits=limits_from_env(os.environ),  # SLUICE_MAX_BODY_BYTES etc. (flags: python -m serving)
        )
    )
