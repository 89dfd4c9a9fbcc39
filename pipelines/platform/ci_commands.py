"""`sluice ci run|log|jobs`: talk to the local CI runner (dispatch a workflow, read its logs)."""

from __future__ import annotations

import argparse
import sys
import time

from pipelines.config import Settings
from pipelines.platform import ci_queue
from pipelines.platform.processes import running_pid


def _inputs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"sluice ci run: --input takes KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def wait_for(settings: Settings, job_id: str, timeout: float, follow: bool) -> ci_queue.Result | None:
    """Until the job has a result (printing its log as it grows when `follow`); None on timeout."""
    deadline = time.monotonic() + timeout
    path = ci_queue.log_path(settings, job_id)
    offset = 0
    while time.monotonic() < deadline:
        if follow and path.is_file():
            with path.open(encoding="utf-8", errors="replace") as fh:
                fh.seek(offset)
                chunk = fh.read()
                offset = fh.tell()
            if chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
        result = ci_queue.result(settings, job_id)
        if result is not None:
            if follow and path.is_file():
                with path.open(encoding="utf-8", errors="replace") as fh:
                    fh.seek(offset)
                    sys.stdout.write(fh.read())
            return result
        time.sleep(0.5)
    return None


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    job = ci_queue.enqueue(settings, "workflow_dispatch", workflow=args.workflow, inputs=_inputs(args.input or []))
    print(f"queued job {job.id}: workflow {args.workflow}")
    if running_pid(settings, "runner") is None:
        print("note: the CI runner is not running; `sluice up` starts it and it runs queued jobs in order")
        return 0 if not args.wait else 1
    if not args.wait:
        print("follow it with `sluice ci log -f`")
        return 0
    result = wait_for(settings, job.id, args.timeout, follow=True)
    if result is None:
        print(f"job {job.id} did not finish within {args.timeout:g}s")
        return 1
    return 0 if result.status in ("success", "skipped") else 1


def cmd_log(args: argparse.Namespace, settings: Settings) -> int:
    job_id = args.job
    if job_id is None:
        candidates = [j.id for j in ci_queue.running(settings)] or [r.job.id for r in ci_queue.results(settings, 1)]
        candidates += [j.id for j in ci_queue.pending(settings)]
        if not candidates:
            print("no CI jobs yet: a push to the GitOps remote queues one")
            return 0
        job_id = candidates[0]
    path = ci_queue.log_path(settings, job_id)
    if not args.follow:
        if not path.is_file():
            print(f"no log for job {job_id} yet")
            return 0
        sys.stdout.write(path.read_text(errors="replace"))
        return 0
    print(f"following job {job_id} ({path})", flush=True)
    result = wait_for(settings, job_id, args.timeout, follow=True)
    return 0 if result is None or result.status in ("success", "skipped") else 1


def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    rows = [["JOB", "EVENT", "WORKFLOWS", "RESULT", "SECONDS", "SUMMARY"]]
    for j in ci_queue.running(settings):
        rows.append([j.id, j.event, j.workflow or "-", "running", "-", ""])
    for j in ci_queue.pending(settings):
        rows.append([j.id, j.event, j.workflow or "-", "queued", "-", ""])
    for r in reversed(ci_queue.results(settings, args.limit)):
        names = ",".join(w["workflow"] for w in r.workflows) or (r.job.workflow or "-")
        rows.append([r.job.id, r.job.event, names, r.status, f"{r.seconds:.1f}", r.summary[:70]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0
