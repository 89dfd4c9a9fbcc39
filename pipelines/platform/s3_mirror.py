"""Keep the embedded S3's objects across restarts: a mirror on disk, restored when LocalStack starts.

LocalStack community keeps S3 in memory (persistence is a Pro feature), so without this `make down`
or a crash of the LocalStack process loses every registered model's artifacts. What is kept, when:
- while the platform runs, this mirror copies every new or changed object of the models and data
  buckets to `<state_dir>/s3/<bucket>/<key>` within SLUICE_S3_MIRROR_INTERVAL seconds (2), and
  removes deleted ones;
- `sluice down` makes one last copy before LocalStack stops, so a clean stop loses nothing;
- `sluice up` puts every mirrored object that S3 lacks back before MLflow starts;
- a bucket found empty of the mirror's marker object is a reset S3, not a mass deletion: nothing is
  removed from the mirror then.
Lost on a crash (kill -9 of LocalStack): only objects written in the last interval before it. Not
kept: earlier versions of versioned objects (only the current one) and bucket settings (terraform
re-applies those).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.config import Settings, load_settings
from pipelines.platform.processes import Echo, running_pid, start_detached

SERVICE = "s3_mirror"  # also the marker looked for in its command line
INTERVAL = float(os.environ.get("SLUICE_S3_MIRROR_INTERVAL", "2"))
# An object the mirror keeps in each bucket: when it is gone, S3 was reset (LocalStack restarted
# empty), and objects missing from a listing are not deletions to mirror.
MARKER = "_sluice/mirror-marker"


def home(settings: Settings) -> Path:
    return settings.state_dir / "s3"


def _buckets(settings: Settings) -> tuple[str, ...]:
    return (settings.models_bucket, settings.data_bucket)


def _client(settings: Settings) -> Any:
    from pipelines.registry import s3_client

    return s3_client(settings)


def _objects(s3: Any, bucket: str) -> Iterator[tuple[str, str]]:
    """(key, etag) of every object in the bucket."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            yield obj["Key"], str(obj.get("ETag", "")).strip('"')


def _index_path(settings: Settings, bucket: str) -> Path:
    return home(settings) / f"{bucket}.index.json"


def _load_index(settings: Settings, bucket: str) -> dict[str, str]:
    try:
        return dict(json.loads(_index_path(settings, bucket).read_text()))
    except (OSError, ValueError):
        return {}


def _save_index(settings: Settings, bucket: str, index: dict[str, str]) -> None:
    path = _index_path(settings, bucket)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index, sort_keys=True))
    tmp.replace(path)


def _local(settings: Settings, bucket: str, key: str) -> Path:
    path = (home(settings) / bucket / key).resolve()
    root = (home(settings) / bucket).resolve()
    if root not in path.parents:
        raise ValueError(f"object key {key!r} escapes the mirror folder")
    return path


def copy_once(settings: Settings, s3: Any | None = None) -> tuple[int, int]:
    """Mirror both buckets once; (objects copied, objects removed). Objects gone from S3 are removed
    from the mirror only while the bucket's marker is there: a reset S3 deletes nothing here."""
    s3 = s3 or _client(settings)
    copied = removed = 0
    for bucket in _buckets(settings):
        index = _load_index(settings, bucket)
        listed = dict(_objects(s3, bucket))
        if MARKER not in listed:
            if MARKER in index:
                continue  # S3 was reset: keep everything until `sluice up` restores it
            s3.put_object(Bucket=bucket, Key=MARKER, Body=b"kept on disk by sluice's S3 mirror\n")
            listed = dict(_objects(s3, bucket))
        seen: dict[str, str] = {}
        for key, etag in listed.items():
            seen[key] = etag
            if index.get(key) == etag and _local(settings, bucket, key).is_file():
                continue
            target = _local(settings, bucket, key)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            s3.download_file(bucket, key, str(tmp))
            tmp.replace(target)
            copied += 1
        for key in set(index) - set(seen):
            _local(settings, bucket, key).unlink(missing_ok=True)
            removed += 1
        _save_index(settings, bucket, seen)
    return copied, removed


def restore(settings: Settings, echo: Echo = print) -> int:
    """Upload every mirrored object the (restarted) S3 lacks; returns how many."""
    s3 = _client(settings)
    restored = 0
    for bucket in _buckets(settings):
        index = _load_index(settings, bucket)
        if not index:
            continue
        present = dict(_objects(s3, bucket))
        for key in sorted(index):
            path = _local(settings, bucket, key)
            if key not in present and path.is_file():
                s3.upload_file(str(path), bucket, key)
                restored += 1
    if restored:
        echo(f"s3: restored {restored} object(s) from {home(settings)} (LocalStack had restarted empty)")
    return restored


def final_copy(settings: Settings, echo: Echo = print) -> None:
    if running_pid(settings, SERVICE) is None:
        return
    try:
        copied, _ = copy_once(settings)
        echo(f"s3: mirrored to {home(settings)} before stopping ({copied} new object(s))")
    except Exception as exc:  # S3 already gone: the mirror holds what it copied until now
        echo(f"s3: last copy skipped ({type(exc).__name__}: {exc}); the mirror keeps its earlier copy")


def start(settings: Settings, echo: Echo = print) -> int | None:
    pid = running_pid(settings, SERVICE)
    if pid is not None:
        return pid
    from pipelines.platform.gitserver import settings_env

    pid = start_detached(
        settings,
        SERVICE,
        [sys.executable, "-m", "pipelines.platform.s3_mirror"],
        {**os.environ, **settings_env(settings)},
    )
    echo(f"s3: objects mirrored to {home(settings)} every {INTERVAL:g}s (pid {pid}); kept across restarts")
    return pid


def main() -> int:
    import signal

    settings = load_settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    s3 = _client(settings)
    last_error = ""
    while not stop.wait(INTERVAL):
        try:
            copied, removed = copy_once(settings, s3)
            if copied or removed:
                print(f"s3-mirror: {copied} copied, {removed} removed", flush=True)
            last_error = ""
        except Exception as exc:  # S3 down for a moment: try again next interval
            message = f"{type(exc).__name__}: {exc}"
            if message != last_error:
                print(f"s3-mirror: {message}", flush=True)
            last_error = message
    return 0


if __name__ == "__main__":
    sys.exit(main())
