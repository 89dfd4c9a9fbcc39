"""The receiver's HTTP server: KServe's payload-logger events in, Parquet in S3 out.

    POST /         one CloudEvent (binary or structured mode): 200 once it is in the write-ahead log
                   (`{"status": "accepted"}`, or `"duplicate"` for a ce-id and type already logged),
                   400 `{"error": ...}` naming what is wrong, 413 when too large, 503 when the spool is
                   full or cannot be written (not acknowledged)
    GET /metrics   Prometheus metrics
    GET /healthz   liveness: the event loop answers
    GET /readyz    readiness: 200 while events can be accepted; a JSON summary of the spool

Acknowledged means appended to the write-ahead log (wal.py): from then on the event survives a
SIGKILL, a SIGTERM and any S3 outage. SIGTERM stops accepting, stores every pending half alone,
writes the last Parquet files and tries to upload the spool for `drain_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.inference_log.config import LogConfig
from serving.inference_log.events import EventError, event_kind, parse_event
from serving.inference_log.layout import warm_up
from serving.inference_log.metrics import LogMetrics
from serving.inference_log.spool import Spool
from serving.inference_log.uploader import Uploader

log = logging.getLogger("serving.inference_log")
_ACCEPTED = b'{"status":"accepted"}'
_DUPLICATE = b'{"status":"duplicate"}'
TICK = 0.25  # how often the timers (flush interval, WAL sync, commit pruning) are looked at


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=json.dumps({"error": message}).encode(), content_type="application/json")


class Receiver:
    def __init__(self, config: LogConfig, s3: Any):
        self.config = config
        self.metrics = LogMetrics()
        self.spool = Spool(config)
        self.uploader = Uploader(
            self.spool.outbox,
            s3,
            config.bucket,
            config.prefix,
            retry_max=config.upload_retry_max,
            on_uploaded=self._uploaded,
            on_failure=self.metrics.upload_failures.inc,
        )
        self.metrics.watch(
            spool_bytes=lambda: self.spool.size_bytes,
            spool_files=lambda: len(self.spool.outbox.files()),
            pending=lambda: self.spool.pairer.pending_count,
        )
        self._flush_lock = asyncio.Lock()
        self._flush_task: asyncio.Task[None] | None = None
        self._last_flush = time.monotonic()
        self._last_sync = time.monotonic()
        self._closing = asyncio.Event()
        self._synced = 0  # appends known to be fsync'd (group commit, with config.fsync)
        self._sync_task: asyncio.Future[None] | None = None

    def _uploaded(self, model: str, rows: int) -> None:
        self.metrics.rows_written.labels(model).inc(rows)
        self.metrics.files_written.inc()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_post("/", self.handle_event)
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/healthz", self.handle_healthz)
        app.router.add_get("/readyz", self.handle_readyz)
        return app

    # --- handlers ---------------------------------------------------------------------------------

    async def handle_event(self, request: web.Request) -> web.Response:
        received_at_us = time.time_ns() // 1000
        kind = event_kind(request.headers)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.metrics.events.labels(kind, "invalid").inc()
            log.info("event rejected (413): body larger than %d bytes", self.config.max_body_bytes)
            return _error(413, f"body: larger than {self.config.max_body_bytes} bytes")
        try:
            event = parse_event(request.headers, body, received_at_us)
        except EventError as e:
            self.metrics.events.labels(kind, "invalid").inc()
            log.info("event rejected (400) from %s: %s", request.remote, e)
            return _error(400, str(e))
        kind = event.kind
        if self.spool.size_bytes >= self.config.max_spool_bytes:
            self.metrics.events.labels(kind, "rejected").inc()
            log.warning("event %s rejected (503): spool full (%d bytes)", event.ce_id, self.spool.size_bytes)
            return _error(503, f"spool: full ({self.spool.size_bytes} bytes, limit {self.config.max_spool_bytes})")
        try:
            outcome = self.spool.accept(event)
        except OSError as e:
            self.metrics.events.labels(kind, "rejected").inc()
            log.error("event %s rejected (503): the write-ahead log cannot be written: %s", event.ce_id, e)
            return _error(503, f"spool: the write-ahead log cannot be written ({e.strerror or e})")
        if self.config.fsync and outcome == "accepted":
            try:
                await self._durable(self.spool.wal.appended)
            except OSError as e:
                self.metrics.events.labels(kind, "rejected").inc()
                log.error("event %s not acknowledged (503): fsync of the write-ahead log failed: %s", event.ce_id, e)
                return _error(503, f"spool: the write-ahead log cannot be synced ({e.strerror or e})")
        self.metrics.events.labels(kind, outcome).inc()
        if self.spool.completed_rows >= self.config.flush_rows:
            self._start_flush()
        return web.Response(body=_ACCEPTED if outcome == "accepted" else _DUPLICATE, content_type="application/json")

    async def _durable(self, appended: int) -> None:
        """Return once the first `appended` WAL appends are fsync'd. Group commit: handlers waiting
        at the same time share one fsync (in a worker thread) instead of one each."""
        while self._synced < appended:
            if self._sync_task is None or self._sync_task.done():
                self._sync_task = asyncio.ensure_future(self._sync_now())
            await asyncio.shield(self._sync_task)

    async def _sync_now(self) -> None:
        covered = self.spool.wal.appended
        await asyncio.get_running_loop().run_in_executor(None, self.spool.wal.sync)
        self._synced = max(self._synced, covered)

    async def handle_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def handle_readyz(self, request: web.Request) -> web.Response:
        full = self.spool.size_bytes >= self.config.max_spool_bytes
        ready = not full and not self._closing.is_set()
        summary = {
            "ready": ready,
            "pending": self.spool.pairer.pending_count,
            "spool_bytes": self.spool.size_bytes,
            "spool_files": len(self.spool.outbox.files()),
            "last_upload_error": self.uploader.last_error,
        }
        return web.json_response(summary, status=200 if ready else 503)

    # --- flushing ---------------------------------------------------------------------------------

    def _start_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self.flush())

    async def flush(self, everything: bool = False) -> None:
        """Store what is ready (all pending halves too with `everything`); one flush at a time."""
        async with self._flush_lock:
            self._last_flush = time.monotonic()
            now = time.time()
            try:
                batch = self.spool.take_batch(now, everything=everything)
            except OSError:
                log.exception("flush: the write-ahead log cannot be rotated; retried at the next flush")
                return
            if batch is None:
                return
            for record in batch.records:
                if record.request is None or record.response is None:
                    self.metrics.unpaired.labels(record.first.kind).inc()
            started = time.monotonic()
            loop = asyncio.get_running_loop()
            try:
                files = await loop.run_in_executor(None, self.spool.write_batch, batch, now)
            except Exception:
                log.exception(
                    "flush of %d records failed before its commit point; retried at the next flush", len(batch.records)
                )
                self.spool.give_back(batch)
                return
            self.metrics.flush_seconds.observe(time.monotonic() - started)
            self.spool.committed(batch, time.time())
            rows = sum(r.rows for r in batch.records)
            log.debug("flush %d: %d records, %d rows, %d files", batch.seq, len(batch.records), rows, len(files))
            self.uploader.wake()

    async def run_timers(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=TICK)
            if self._closing.is_set():
                return
            now = time.monotonic()
            if not self.config.fsync and now - self._last_sync >= self.config.sync_interval:
                self._last_sync = now
                await loop.run_in_executor(None, self.spool.wal.sync)
            if now - self._last_flush >= self.config.flush_interval:
                await self.flush()
                self.spool.prune_commits(time.time())

    # --- lifecycle --------------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event, started: asyncio.Event | None = None) -> int:
        """Run until `stop` is set; returns the number of files left in the spool at exit."""
        warm_up()  # pyarrow's first array imports pandas where installed (~2 s): not in the first flush
        recovery = self.spool.recover(time.time())
        if recovery.replayed or recovery.finished:
            log.info(
                "spool recovered: %d events replayed from the write-ahead log (%d already stored), "
                "%d interrupted flushes completed; %d files wait for upload",
                recovery.replayed,
                recovery.duplicates,
                recovery.finished,
                len(self.spool.outbox.files()),
            )
        self.uploader.start()
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=5)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        await site.start()
        log.info(
            "inference-log receiver on http://%s:%d/ -> s3://%s/%s (spool %s)",
            self.config.host,
            self.config.port,
            self.config.bucket,
            self.config.prefix,
            self.config.spool_dir,
        )
        timers = asyncio.create_task(self.run_timers())
        if started is not None:
            started.set()
        await stop.wait()
        log.info("stopping: no new events; storing what is pending and uploading the spool")
        self._closing.set()
        await runner.cleanup()  # stops listening, lets handlers in flight finish
        await timers
        await self.flush(everything=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.uploader.stop)
        left = await loop.run_in_executor(None, self.uploader.drain, self.config.drain_timeout)
        self.spool.close()
        if left:
            log.warning(
                "%d files (%d bytes) stay in the spool %s (S3: %s); the next start on it uploads them",
                left,
                self.spool.outbox.size_bytes,
                self.config.spool_dir,
                self.uploader.last_error or "no answer in time",
            )
        else:
            log.info("stopped: everything acknowledged is in S3")
        return left


async def serve(config: LogConfig, s3: Any) -> int:
    """The process: serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await Receiver(config, s3).serve(stop)
