"""The spool directory: what makes an acknowledged event survive a crash, a SIGTERM and an S3 outage.

    wal/<seq>.wal           accepted events (write-ahead log), appended before the acknowledgement
    staging/<seq>/<key>     Parquet files of a flush being written
    commits/<seq>.json      a flush's commit record: which event keys it stored (kept for the dedup window)
    outbox/<key>            committed Parquet files waiting for their upload to S3

A flush (on the event loop, then a worker thread):
 1. closes WAL segment `seq`; every event in segments <= seq is now either in a record of this flush
    (pairs, and halves past the pair timeout) or still pending, and the pending ones are appended
    again to the new segment;
 2. writes the records' Parquet files under staging/<seq>/ (fsync'd);
 3. writes commits/<seq>.json (fsync'd, renamed into place): the commit point;
 4. moves the files into outbox/ and deletes WAL segments <= seq.
A crash before 3 leaves the WAL: the events are replayed at the next start and staging is removed.
A crash after 3 is completed at the next start (moves, WAL deletion). Replay drops events whose keys
a commit record holds, so nothing is stored twice. The uploader then empties outbox/ (uploader.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq

from serving.inference_log.config import LogConfig
from serving.inference_log.events import EventError, LogEvent, make_event
from serving.inference_log.layout import tables
from serving.inference_log.pairing import Key, Pairer, Record
from serving.inference_log.uploader import Outbox
from serving.inference_log.wal import WriteAheadLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    seq: int  # WAL segments up to this one are covered once the batch is committed
    records: list[Record]

    @property
    def keys(self) -> list[Key]:
        return [k for r in self.records for k in r.keys]


@dataclass(frozen=True)
class Recovery:
    replayed: int  # events read back from the WAL
    duplicates: int  # of which already committed (a crash after the commit point)
    finished: int  # flushes that had committed but not moved their files


class Spool:
    def __init__(self, config: LogConfig):
        root = config.spool_dir
        self.config = config
        self.wal = WriteAheadLog(root / "wal")
        self.staging = root / "staging"
        self.commits = root / "commits"
        for d in (self.staging, self.commits):
            d.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(root / "outbox")
        self.pairer = Pairer(config.pair_timeout, config.dedup_window, config.dedup_max, config.max_pending)
        self.completed: list[Record] = []
        self.completed_rows = 0

    # --- start ------------------------------------------------------------------------------------

    def recover(self, now: float) -> Recovery:
        """Finish or undo interrupted flushes, remember committed keys, replay the WAL; then open it."""
        finished = 0
        committed_through = 0
        for path in sorted(self.commits.glob("*.json")):
            commit = json.loads(path.read_text())
            seq = int(commit["seq"])
            committed_through = max(committed_through, seq)
            if (self.staging / f"{seq:012d}").exists():
                self._publish(seq)
                finished += 1
            until = float(commit["at"]) + self.config.dedup_window
            if until > now:
                self.pairer.remember((tuple(k) for k in commit["keys"]), until)  # type: ignore[misc]
            else:
                path.unlink()
        for leftover in self.staging.iterdir():  # a flush that never reached its commit point
            shutil.rmtree(leftover, ignore_errors=True)
        for torn in self.commits.glob("*.tmp"):
            torn.unlink()
        if committed_through:
            self.wal.delete_through(committed_through)
        replayed = duplicates = 0
        for header, body in self.wal.replay():
            replayed += 1
            try:
                event = make_event(
                    ce_id=header["id"],
                    kind=header["kind"],
                    model=header["model"],
                    namespace=header["ns"],
                    endpoint=header["ep"],
                    component=header["comp"],
                    revision=header["rev"],
                    source=header["src"],
                    received_at_us=int(header["t"]),
                    body=body,
                )
            except (EventError, KeyError) as e:  # it passed these checks when accepted: a bug, not input
                log.error("write-ahead log: dropping a record that no longer parses (%s)", e)
                continue
            if self.pairer.is_duplicate(event.key):
                duplicates += 1
                continue
            self._add(event)
        self.wal.open(after=committed_through)  # numbers never reused, even if wal/ was emptied by hand
        return Recovery(replayed=replayed, duplicates=duplicates, finished=finished)

    # --- the event loop ---------------------------------------------------------------------------

    def accept(self, event: LogEvent) -> Literal["accepted", "duplicate"]:
        """Log the event (write-ahead) and pair it; OSError when the WAL cannot be written."""
        if self.pairer.is_duplicate(event.key):
            return "duplicate"
        self.wal.append(event)
        self._add(event)
        return "accepted"

    def _add(self, event: LogEvent) -> None:
        record = self.pairer.add(event)
        if record is not None:
            self.completed.append(record)
            self.completed_rows += record.rows

    @property
    def size_bytes(self) -> int:
        return self.wal.size_bytes + self.outbox.size_bytes

    def take_batch(self, now: float, everything: bool = False) -> Batch | None:
        """Step 1 of a flush: the records ready to store, with the WAL rotated behind them. Raises
        OSError with nothing lost (the records stay in memory, the old segments on disk)."""
        if not self.completed and not self.pairer.due(now, everything):
            return None
        seq = self.wal.rotate()
        batch = Batch(seq=seq, records=self.completed + self.pairer.expire(now, everything=everything))
        self.completed, self.completed_rows = [], 0
        try:
            for event in self.pairer.pending():  # still waiting: carried into the new segment
                self.wal.append(event)
        except OSError:
            self.give_back(batch)  # the old segments stay until a flush carries them over
            raise
        return batch

    def give_back(self, batch: Batch) -> None:
        """A batch whose write failed before its commit point: its records go into the next flush
        (its WAL segments are not deleted before that flush commits)."""
        self.completed[:0] = batch.records
        self.completed_rows += sum(r.rows for r in batch.records)

    def committed(self, batch: Batch, now: float) -> None:
        """Step 4's bookkeeping, back on the event loop: remember the keys, drop the WAL segments."""
        self.pairer.settle(batch.keys, now)
        self.wal.delete_through(batch.seq)

    def prune_commits(self, now: float) -> None:
        for path in self.commits.glob("*.json"):
            if path.stat().st_mtime + self.config.dedup_window < now:
                path.unlink(missing_ok=True)

    # --- a worker thread --------------------------------------------------------------------------

    def write_batch(self, batch: Batch, now: float) -> list[Path]:
        """Steps 2-4 (files): Parquet in staging, the commit record, files into the outbox. Returns
        the outbox files. Raises only before the commit point (then nothing was committed)."""
        stage = self.staging / f"{batch.seq:012d}"
        try:
            for relkey, table in tables(batch.records).items():
                path = stage / relkey
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(table, path)
                _fsync(path)
            self.wal.sync()  # the carried-forward events must be durable before their old copies go
            commit = {"seq": batch.seq, "at": now, "keys": batch.keys}
            tmp = self.commits / f"{batch.seq:012d}.json.tmp"
            tmp.write_text(json.dumps(commit, separators=(",", ":")))
            _fsync(tmp)
            tmp.rename(self.commits / f"{batch.seq:012d}.json")
            _fsync(self.commits)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        try:
            return self._publish(batch.seq)
        except OSError:
            log.exception(
                "flush %d committed, but moving its files to the outbox failed: done at next start", batch.seq
            )
            return []

    def _publish(self, seq: int) -> list[Path]:
        stage = self.staging / f"{seq:012d}"
        moved = []
        for path in sorted(p for p in stage.rglob("*.parquet")):
            target = self.outbox.directory / path.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            size = path.stat().st_size
            path.rename(target)
            self.outbox.added(size)
            moved.append(target)
        shutil.rmtree(stage, ignore_errors=True)
        return moved

    def close(self) -> None:
        self.wal.close()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
