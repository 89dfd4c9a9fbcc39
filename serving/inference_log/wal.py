"""The write-ahead log: every accepted event is appended here before the receiver acknowledges it.

Segments `<dir>/<seq>.wal`, each record a JSON header line (the event's attributes and the body's
length) followed by the raw body and a newline. An append is one write(2) to an O_APPEND file: once
it returns, the event is in the kernel's page cache and survives the receiver being killed (SIGKILL,
OOM); it survives a machine crash only once fsync'd (`sync`: before the acknowledgement with
SLUICE_INFERENCE_LOG_FSYNC=1, one fsync shared by the appends waiting for it, else within
`sync_interval`). A record cut short by a crash mid-write was never acknowledged, and replay stops
there. A segment is deleted once a flush has committed every event in it (see spool.py).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from serving.inference_log.events import LogEvent

log = logging.getLogger(__name__)
SUFFIX = ".wal"


def segment_seq(path: Path) -> int:
    return int(path.stem)


class WriteAheadLog:
    def __init__(self, directory: Path):
        self.directory = directory
        self.appended = 0  # appends so far: a sync that starts after append number N makes N durable
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # fsync (a worker thread) vs rotate/close (the event loop)
        self._fd: int | None = None
        self._seq = 0
        self._offset = 0
        self._dirty = False
        self._bytes = sum(p.stat().st_size for p in self.segments())

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{SUFFIX}"), key=segment_seq)

    def replay(self) -> Iterator[tuple[dict[str, Any], bytes]]:
        """The records of every existing segment, oldest first (call before `open`)."""
        for path in self.segments():
            yield from _read_segment(path)

    def open(self, after: int = 0) -> int:
        """Start a new segment numbered after the existing ones and `after`; returns its number."""
        existing = self.segments()
        self._seq = max(segment_seq(existing[-1]) if existing else 0, after) + 1
        self._open_segment()
        return self._seq

    def _open_segment(self) -> None:
        path = self.directory / f"{self._seq:012d}{SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._offset = os.fstat(self._fd).st_size
        _fsync_dir(self.directory)

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def append(self, event: LogEvent) -> None:
        """Raises OSError (disk full...) with the segment left as it was: then nothing was logged."""
        assert self._fd is not None, "open() first"
        header = {
            "id": event.ce_id,
            "kind": event.kind,
            "model": event.model,
            "ns": event.namespace,
            "ep": event.endpoint,
            "comp": event.component,
            "rev": event.revision,
            "src": event.source,
            "t": event.received_at_us,
            "n": len(event.body),
        }
        record = json.dumps(header, separators=(",", ":")).encode() + b"\n" + event.body + b"\n"
        try:
            written = os.write(self._fd, record)
            if written != len(record):
                raise OSError(f"short write to the write-ahead log ({written} of {len(record)} bytes)")
        except OSError:
            # A torn record in the middle of a segment would hide the records after it at replay.
            os.ftruncate(self._fd, self._offset)
            raise
        self._offset += len(record)
        self._bytes += len(record)
        self._dirty = True
        self.appended += 1

    def sync(self) -> None:
        """fsync the current segment if anything was appended since the last sync (any thread)."""
        with self._lock:
            if self._fd is not None and self._dirty:
                self._dirty = False
                os.fsync(self._fd)

    def rotate(self) -> int:
        """Close the current segment (fsync'd) and start the next; returns the closed one's number."""
        with self._lock:
            assert self._fd is not None
            os.fsync(self._fd)
            os.close(self._fd)
            closed = self._seq
            self._seq += 1
            self._dirty = False
            self._open_segment()
        return closed

    def delete_through(self, seq: int) -> None:
        """Delete every closed segment numbered `seq` or lower."""
        for path in self.segments():
            n = segment_seq(path)
            if n > seq or n == self._seq:
                continue
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            self._bytes -= size
        _fsync_dir(self.directory)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None


def _read_segment(path: Path) -> Iterator[tuple[dict[str, Any], bytes]]:
    with path.open("rb") as f:
        while True:
            line = f.readline()
            if not line:
                return
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("header cut short")
                header = json.loads(line)
                body = f.read(int(header["n"]))
                if len(body) != header["n"] or f.read(1) != b"\n":
                    raise ValueError("body cut short")
            except (ValueError, KeyError, TypeError) as e:
                # Only the last append can be torn (by a crash mid-write), and it was not acknowledged.
                log.warning("write-ahead log %s: ignoring a torn record at byte %d (%s)", path, f.tell(), e)
                return
            yield header, body


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
