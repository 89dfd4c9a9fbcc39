"""`python -m serving.inference_log [--host H] [--port P] [--spool-dir DIR]`: run the receiver.

Every setting is an env var (config.py); these flags override the three that differ per process.
Exit status 0 after a SIGTERM, also when files stay in the spool for the next start to upload.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from serving.inference_log.config import ConfigError, load_config, s3_client_from_env


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serving.inference_log",
        description="Receive KServe payload-logger CloudEvents and store them as Parquet in S3.",
    )
    p.add_argument("--host", default=None, help="listen address (env SLUICE_INFERENCE_LOG_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="listen port (env SLUICE_INFERENCE_LOG_PORT, default 8090)")
    p.add_argument("--spool-dir", type=Path, default=None, help="spool directory (env SLUICE_INFERENCE_LOG_SPOOL_DIR)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    try:
        config = load_config(host=args.host, port=args.port, spool_dir=args.spool_dir)
    except ConfigError as e:
        print(f"inference-log: {e}", file=sys.stderr)
        return 2
    from serving.inference_log.server import serve

    asyncio.run(serve(config, s3_client_from_env()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
