"""Upload the outbox's Parquet files to S3, oldest first; keep them on disk until S3 has them.

A background thread uploads whatever a flush put in the outbox and deletes each file once S3 has
answered; while S3 fails it retries with exponential backoff (1 s doubling to `retry_max`), counting
each failure. On SIGTERM the server stops it and calls `drain` for a last bounded attempt; what is
still in the outbox then is uploaded by the next process that starts on the same spool.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from serving.inference_log.layout import parse_key

log = logging.getLogger(__name__)
CONTENT_TYPE = "application/vnd.apache.parquet"


class Outbox:
    """Committed files waiting for S3, with a thread-safe count of their bytes."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._bytes = sum(p.stat().st_size for p in self.files())

    def files(self) -> list[Path]:
        # part-<UTC timestamp>-...: the name orders files by the time they were written.
        return sorted(self.directory.rglob("*.parquet"), key=lambda p: p.name)

    def added(self, size: int) -> None:
        with self._lock:
            self._bytes += size

    def remove(self, path: Path) -> None:
        size = path.stat().st_size
        path.unlink()
        with self._lock:
            self._bytes -= size
        parent = path.parent
        while parent != self.directory:  # empty partition folders
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def quarantine(self, path: Path) -> Path:
        target = self.directory.parent / "rejected" / path.relative_to(self.directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        size = path.stat().st_size
        path.rename(target)
        with self._lock:
            self._bytes -= size
        return target

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def key(self, path: Path, prefix: str) -> str:
        return prefix + path.relative_to(self.directory).as_posix()


class Uploader:
    def __init__(
        self,
        outbox: Outbox,
        s3: Any,
        bucket: str,
        prefix: str,
        retry_max: float = 30.0,
        on_uploaded: Callable[[str, int], None] = lambda model, rows: None,
        on_failure: Callable[[], None] = lambda: None,
    ):
        self.outbox = outbox
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self.retry_max = retry_max
        self.on_uploaded = on_uploaded
        self.on_failure = on_failure
        self.last_error = ""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inference-log-uploader", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            if self.upload_all(self._stop.is_set):
                backoff = 0.0
                self._wake.wait(timeout=10)
            else:
                backoff = min(max(1.0, backoff * 2), self.retry_max)
                self._stop.wait(timeout=backoff)

    def upload_all(self, stop: Callable[[], bool] = lambda: False) -> bool:
        """Upload every file in the outbox; False at the first failure (the rest wait for a retry)."""
        for path in self.outbox.files():
            if stop():
                return True
            if not self.upload(path):
                return False
        return True

    def upload(self, path: Path) -> bool:
        key = self.outbox.key(path, self.prefix)
        try:
            rows = pq.read_metadata(path).num_rows
        except FileNotFoundError:
            return True
        except Exception as e:  # not Parquet: set it aside rather than retry it forever ahead of the rest
            log.error("%s is not a readable Parquet file (%s): moved to %s", path, e, self.outbox.quarantine(path))
            return True
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes(), ContentType=CONTENT_TYPE)
        except FileNotFoundError:
            return True  # already uploaded and removed by another pass
        except Exception as e:  # boto3/botocore raise many types; every one means "try again later"
            self.on_failure()
            message = f"{type(e).__name__}: {e}"
            if message != self.last_error:  # one line per kind of failure, not one per retry
                log.warning("upload of s3://%s/%s failed, the file stays in the spool: %s", self.bucket, key, message)
            self.last_error = message
            return False
        if self.last_error:
            log.info("S3 answers again: uploading the spool")
            self.last_error = ""
        self.outbox.remove(path)
        parsed = parse_key(key)
        self.on_uploaded(parsed[0] if parsed else "", rows)
        return True

    def drain(self, timeout: float) -> int:
        """Keep uploading until the outbox is empty or `timeout` passes; returns the files left."""
        deadline = time.monotonic() + timeout
        backoff = 0.5
        while self.outbox.files():
            if self.upload_all(lambda: time.monotonic() > deadline):
                if not self.outbox.files() or time.monotonic() > deadline:
                    break
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(backoff, remaining))
            backoff = min(backoff * 2, 5.0)
        return len(self.outbox.files())
