"""The storage initializer's job: put a model version's files (a storage URI or a local directory) in
a local directory. `sluice serve` and the local cluster stand-in download with it; which version a
name or alias means is the registry's business (pipelines/registry.py).

Downloads use kserve_storage, the code of KServe's storage initializer, so a URI that works here works
as an InferenceService `storageUri`, and the other way round. Local sources (a registry on a local
MLflow store hands out plain paths) are copied instead: kserve_storage links local files, and MLflow
3 refuses to load a model whose files resolve outside its directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from serving.provenance import UNKNOWN, Provenance, write_provenance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalModel:
    model_dir: Path
    version: str | None  # None: let the runtime resolve it (env, sluice.json, "unknown")


def download(uri: str, dest: Path, aws_env: dict[str, str]) -> Path:
    """Download everything under `uri` into `dest` (replaced atomically), as the storage initializer does."""
    from kserve_storage import Storage

    os.environ.update(aws_env)  # kserve_storage reads its S3 endpoint and credentials from the env
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        local = local_path(uri)
        if local is not None:
            shutil.copytree(local, tmp, dirs_exist_ok=True)
        else:
            Storage.download(uri, str(tmp))
        if not (tmp / "MLmodel").is_file():
            raise FileNotFoundError(f"{uri} holds no MLmodel file: not an MLflow model directory")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def local_path(uri: str) -> Path | None:
    """The directory a `file://` URI or a plain path names; None for remote URIs."""
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri) if "://" not in uri and Path(uri).is_dir() else None


def fetch_uri(uri: str, cache: Path, aws_env: dict[str, str]) -> LocalModel:
    if Path(uri).is_dir():
        return LocalModel(Path(uri), None)  # local: serve in place
    dest = cache / "by-uri" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    log.info("downloading %s", uri)
    download(uri, dest, aws_env)
    write_provenance(dest, Provenance("", UNKNOWN, uri))
    return LocalModel(dest, None)
