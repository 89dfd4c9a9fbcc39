"""The local CI runner's job queue: one JSON file per job, moved between folders by atomic renames.

  <state_dir>/ci/queue/<id>.json     waiting (the post-receive hook, the ticker, `sluice ci run`)
  <state_dir>/ci/running/<id>.json   taken by the runner
  <state_dir>/ci/jobs/<id>.json      finished, with its result
  <state_dir>/logs/ci/<id>.log       its output (act's log of every workflow it ran)

A job survives `sluice down`/`up` and a crash of the runner: whatever was running when the runner
stopped goes back to the queue when it starts (`recover`); CI steps are idempotent reconciles, so
running one twice does the work once.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.config import Settings

EVENTS = ("push", "schedule", "workflow_dispatch", "repository_dispatch")


@dataclass(frozen=True)
class Job:
    id: str
    event: str  # push | schedule | workflow_dispatch | repository_dispatch
    workflow: str | None = None  # all but push name one (e.g. "rollout"); push selects by filters
    ref: str = "refs/heads/main"
    before: str | None = None
    after: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    queued_at: str = ""
    pusher: str = ""


@dataclass(frozen=True)
class Result:
    job: Job
    status: str  # success | failure | skipped | error
    summary: str
    started_at: str
    finished_at: str
    seconds: float
    workflows: list[dict[str, Any]] = field(default_factory=list)  # name, status, seconds


def folder(settings: Settings, name: str) -> Path:
    path = settings.state_dir / "ci" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_path(settings: Settings, job_id: str) -> Path:
    path = settings.logs_dir / "ci"
    path.mkdir(parents=True, exist_ok=True)
    return path / f"{job_id}.log"


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def enqueue(settings: Settings, event: str, **fields: Any) -> Job:
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    job_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + f"{time.time_ns() % 1_000_000_000:09d}-{event}"
    job = Job(id=job_id, event=event, queued_at=_stamp(), **fields)
    _write(folder(settings, "queue") / f"{job.id}.json", asdict(job))
    return job


def _load(path: Path) -> Job | None:
    try:
        return Job(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def pending(settings: Settings) -> list[Job]:
    jobs = [_load(p) for p in sorted(folder(settings, "queue").glob("*.json"))]
    return [j for j in jobs if j is not None]


def running(settings: Settings) -> list[Job]:
    jobs = [_load(p) for p in sorted(folder(settings, "running").glob("*.json"))]
    return [j for j in jobs if j is not None]


def claim(settings: Settings, job: Job) -> bool:
    """Move a queued job to running; False if another taker was first."""
    try:
        (folder(settings, "queue") / f"{job.id}.json").rename(folder(settings, "running") / f"{job.id}.json")
    except FileNotFoundError:
        return False
    return True


def finish(settings: Settings, result: Result) -> None:
    _write(folder(settings, "jobs") / f"{result.job.id}.json", asdict(result))
    (folder(settings, "running") / f"{result.job.id}.json").unlink(missing_ok=True)


def recover(settings: Settings) -> list[Job]:
    """Put jobs a stopped runner left running back in the queue (oldest first, as they were)."""
    back = []
    for path in sorted(folder(settings, "running").glob("*.json")):
        path.rename(folder(settings, "queue") / path.name)
        job = _load(folder(settings, "queue") / path.name)
        if job is not None:
            back.append(job)
    return back


def results(settings: Settings, limit: int = 10) -> list[Result]:
    out = []
    for path in sorted(folder(settings, "jobs").glob("*.json"))[-limit:]:
        try:
            data = json.loads(path.read_text())
            data["job"] = Job(**data["job"])
            out.append(Result(**data))
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return out


def result(settings: Settings, job_id: str) -> Result | None:
    for r in results(settings, limit=10_000):
        if r.job.id == job_id:
            return r
    return None
