"""The local CI runner: executes the project's own `.github/workflows` with act, one job at a time.

Started by `sluice up` as `python -m pipelines.platform.runner` (stopped by `sluice down`). It takes
jobs from the queue (ci_queue.py) in order, so at most one CI step touches Git at a time (GitHub uses
`concurrency` groups for that), and runs a ticker that queues the scheduled workflows while they have
something to do:
  rollout  every SLUICE_CI_TICK seconds (15) while a model has a rollout in progress
  sync     every SLUICE_CI_SYNC_TICK seconds (60) while a release file names an alias
For each job it checks out a worker clone of the remote at the event's commit, selects the workflows
(push: by their `on.push` filters; schedule and dispatch: by name) and runs each with act
(pipelines/platform/act.py). The workflows push their commits back to the remote as `sluice-ci`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pipelines.config import REPO_ROOT, Settings, load_settings
from pipelines.gitops import git
from pipelines.gitops.state import Revision, models, read_model
from pipelines.platform import act, ci_queue
from pipelines.platform.ci_queue import Job, Result

BOT_NAME, BOT_EMAIL = "sluice-ci", "sluice-ci@localhost"
JOB_TIMEOUT = 1800.0


@dataclass
class Ticker:
    """When each scheduled workflow last ran (monotonic seconds)."""

    last: dict[str, float] = field(default_factory=dict)

    def due(self, name: str, every: float) -> bool:
        now = time.monotonic()
        if now - self.last.get(name, -1e9) >= every:
            self.last[name] = now
            return True
        return False


def ci_dir(settings: Settings) -> Path:
    path = settings.state_dir / "ci"
    path.mkdir(parents=True, exist_ok=True)
    return path


def runner_venv(settings: Settings) -> Path:
    """The environment the workflows' `uv sync` fills (setup-uv's cache, in effect); shared across
    jobs so an unchanged lock file costs nothing. SLUICE_CI_VENV points several platforms at one."""
    return Path(os.environ.get("SLUICE_CI_VENV") or ci_dir(settings) / "venv")


def secrets(settings: Settings) -> dict[str, str]:
    """What the workflows read from `secrets.*`: the platform's own endpoints and credentials."""
    from pipelines.platform import prometheus

    values = {
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "AWS_ACCESS_KEY_ID": settings.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key,
        "MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
    }
    if settings.standin:
        # The local stand-in answers the InferenceService API path: the rollout reads the cluster's view.
        values["SLUICE_KUBE_API"] = settings.serve_url
    elif os.environ.get("KUBECONFIG") and Path(os.environ["KUBECONFIG"]).is_file():
        # A real cluster (the kind e2e): the workflow writes this secret to a kubeconfig file.
        values["KUBECONFIG"] = Path(os.environ["KUBECONFIG"]).read_text()
    if not prometheus.manages_prometheus(settings) or prometheus.binary(settings) is not None:
        values["PROMETHEUS_URL"] = settings.metrics_url
    return values


def variables() -> dict[str, str]:
    return {"SLUICE_BOT_NAME": BOT_NAME, "SLUICE_BOT_EMAIL": BOT_EMAIL}


def job_env(settings: Settings) -> dict[str, str]:
    """The environment act and the steps see: a runner's, not this shell's (no SLUICE_* leaking in),
    plus what the stand-in actions need to find the remote, the interpreter and uv."""
    from pipelines.platform.toolvenv import uv_binary

    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "UV_CACHE_DIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    base_python = getattr(sys, "_base_executable", sys.executable)
    env |= {
        "SLUICE_CI_REMOTE": settings.gitops_url,
        "SLUICE_CI_PYTHON": base_python,
        "SLUICE_CI_UV": uv_binary(),
        "SLUICE_CI_VENV": str(runner_venv(settings)),
        "UV_LINK_MODE": os.environ.get("UV_LINK_MODE", "hardlink"),
    }
    return env


def worker(settings: Settings) -> Path:
    """A clone of the remote that act runs from (act reads the workflow and github.sha there)."""
    path = ci_dir(settings) / "worker"
    if not (path / ".git").is_dir():
        shutil.rmtree(path, ignore_errors=True)
        git.git(path.parent, "clone", "--quiet", settings.gitops_url, str(path))
    else:
        git.git(path, "fetch", "--quiet", "--prune", "origin")
    return path


def event_payload(job: Job, sha: str, settings: Settings) -> dict[str, Any]:
    repo = {
        "name": "gitops",
        "full_name": "local/gitops",
        "clone_url": settings.gitops_url,
        "default_branch": settings.gitops_branch,
    }
    if job.event == "push":
        return {
            "ref": job.ref,
            "before": job.before or git.ZERO_SHA,
            "after": sha,
            "repository": repo,
            "pusher": {"name": job.pusher},
        }
    if job.event == "workflow_dispatch":
        return {"ref": job.ref, "inputs": job.inputs, "repository": repo}
    if job.event == "repository_dispatch":  # e.g. the drift alert asking for a retrain
        return {"action": job.inputs.get("type", ""), "client_payload": job.inputs, "repository": repo}
    return {"schedule": "local ticker", "repository": repo}


def select(job: Job, workflows: list[act.Workflow], changed: list[str] | None) -> list[act.Workflow]:
    if job.event == "push":
        branch = job.ref.removeprefix("refs/heads/")
        return [w for w in workflows if act.push_selects(w, branch, changed)]
    return [w for w in workflows if w.name == job.workflow and job.event in w.triggers]


def execute(settings: Settings, job: Job, log: IO[str]) -> Result:
    started, t0 = ci_queue._stamp(), time.monotonic()
    runs: list[dict[str, Any]] = []

    def done(status: str, summary: str) -> Result:
        log.write(f"== job {job.id}: {status}: {summary}\n")
        log.flush()
        return Result(job, status, summary, started, ci_queue._stamp(), round(time.monotonic() - t0, 2), runs)

    log.write(f"== job {job.id}: {job.event}{' ' + job.workflow if job.workflow else ''} (queued {job.queued_at})\n")
    try:
        work = worker(settings)
        sha = job.after if job.event == "push" and job.after else git.resolve(work, f"origin/{settings.gitops_branch}")
        if sha is None:
            return done("skipped", "the remote has no commits")
        git.git(work, "checkout", "--quiet", "--force", "--detach", sha)
        git.git(work, "clean", "-qfdx")
        workflows = act.load_workflows(work / ".github" / "workflows")
        changed = git.changed_files(work, job.before, sha) if job.event == "push" and job.before else None
        chosen = select(job, workflows, changed)
    except (git.GitError, OSError, ValueError) as exc:
        return done("error", f"cannot prepare the job: {exc}")
    if not chosen:
        return done("skipped", f"no workflow runs for this {job.event}")
    log.write(f"== commit {sha[:12]}; workflows: {', '.join(w.name for w in chosen)}\n")
    log.flush()
    folder = ci_dir(settings)
    event_file = folder / "events" / f"{job.id}.json"
    event_file.parent.mkdir(parents=True, exist_ok=True)
    event_file.write_text(json.dumps(event_payload(job, sha, settings)))
    secrets_file = act.write_dotenv(folder / "secrets.env", secrets(settings))
    vars_file = act.write_dotenv(folder / "vars.env", variables())
    failed = []
    for wf in chosen:
        w0 = time.monotonic()
        log.write(f"== workflow {wf.name} ({wf.path.name})\n")
        log.flush()
        try:
            code = act.run(
                wf,
                job.event,
                event_file,
                cwd=work,
                secrets_file=secrets_file,
                vars_file=vars_file,
                cache=folder / "act",
                env=job_env(settings),
                log=log,
                inputs=job.inputs if job.event == "workflow_dispatch" else None,
                timeout=JOB_TIMEOUT,
            )
        except act.ActError as exc:
            log.write(f"act: {exc}\n")
            code = 127
        seconds = round(time.monotonic() - w0, 2)
        runs.append({"workflow": wf.name, "status": "success" if code == 0 else "failure", "seconds": seconds})
        log.write(f"== workflow {wf.name}: {'success' if code == 0 else f'failure (exit {code})'} in {seconds:.1f}s\n")
        log.flush()
        if code != 0:
            failed.append(wf.name)
    if failed:
        return done("failure", f"failed: {', '.join(failed)}")
    return done("success", f"ran {', '.join(w.name for w in chosen)}")


def tick(settings: Settings, ticker: Ticker) -> None:
    """Queue the scheduled workflows that have something to do (never twice in the queue)."""
    remote = settings.gitops_remote_path
    if remote is None or git.resolve(remote, settings.gitops_branch) is None:
        return
    source = Revision(remote, settings.gitops_branch)
    in_rollout = aliased = False
    for name in models(source):
        try:
            state = read_model(source, name)
        except ValueError:
            continue
        in_rollout |= state.status.in_rollout
        aliased |= state.release is not None and state.release.alias is not None
    waiting = {j.workflow for j in [*ci_queue.pending(settings), *ci_queue.running(settings)] if j.event == "schedule"}
    if in_rollout and "rollout" not in waiting and ticker.due("rollout", settings.ci_tick):
        ci_queue.enqueue(settings, "schedule", workflow="rollout")
    if aliased and "sync" not in waiting and ticker.due("sync", settings.ci_sync_tick):
        ci_queue.enqueue(settings, "schedule", workflow="sync")


def run_forever(settings: Settings, stop: threading.Event) -> None:
    for job in ci_queue.recover(settings):
        print(f"runner: job {job.id} was interrupted; it runs again", flush=True)
    ticker = Ticker()
    print(f"runner: serving {settings.gitops_url}; logs in {settings.logs_dir / 'ci'}", flush=True)
    while not stop.is_set():
        pending = ci_queue.pending(settings)
        if not pending:
            try:
                tick(settings, ticker)
            except (git.GitError, OSError) as exc:
                print(f"runner: ticker: {exc}", flush=True)
            stop.wait(0.5)
            continue
        job = pending[0]
        if not ci_queue.claim(settings, job):
            continue
        print(f"runner: job {job.id} started", flush=True)
        with ci_queue.log_path(settings, job.id).open("a", encoding="utf-8") as log:
            result = execute(settings, job, log)
            if stop.is_set() and result.status != "success":
                # Stopped under it (sluice down): it stays in running/, and the next start queues it again.
                log.write("== interrupted by the runner's shutdown: it runs again at the next start\n")
                print(f"runner: job {job.id} interrupted; it runs again at the next start", flush=True)
                break
        ci_queue.finish(settings, result)
        print(f"runner: job {job.id} {result.status}: {result.summary} ({result.seconds:.1f}s)", flush=True)


def main() -> int:
    settings = load_settings()
    os.chdir(REPO_ROOT)
    stop = threading.Event()

    def handle(_sig: int, _frame: object) -> None:
        # The job in progress finishes (or is put back in the queue by the next start if killed).
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    run_forever(settings, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
