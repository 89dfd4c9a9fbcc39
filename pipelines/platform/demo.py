"""`make demo`: the GitOps story on the embedded platform, told with git commands only.

1. train three versions (a good one, a better retrain, a broken retrain) and register them in MLflow;
2. clone the GitOps remote `.sluice/gitops.git`, name the first version in the release file, commit,
   push: the pre-receive check passes, CI renders it (straight to 100% when nothing serves yet);
3. name the retrain and push: a 10% canary; client traffic flows through the cluster stand-in, and
   the rollout advances 10 -> 50 -> 100 on Prometheus' measurements and finalizes, with nobody
   typing a command (the CI runner's ticker runs the rollout workflow);
4. name an unknown version: the push is refused, nothing written;
5. name the broken retrain: refused at push time by the evaluation gate; pushed again with a
   `Sluice-Force:` trailer, it becomes a canary, the divergence gate rolls it back on its own and CI
   writes the stable version back into the release file;
6. watch what serves: the traffic the stand-in answered is in the inference log (Parquet in S3);
   `sluice drift` compares it with the version's reference sample (quiet), then clients change
   their promotion pattern and it finds drift, with an HTML report;
7. the actual sales arrive: `sluice feedback` gives realized RMSPE per version; the retrain workflow
   (what the drift alert dispatches) trains, passes the gate and commits the release change, and
   the new version goes out as a canary like any other release;
8. `sluice history`, and where to look.
Re-running the demo continues from what serves: every release after the first is a canary.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.config import Settings, load_settings
from pipelines.gitops import git
from pipelines.gitops.history import format_history, history
from pipelines.gitops.status import Status
from pipelines.platform.traffic import BackgroundTraffic, Traffic, request_rows, wait_until_served
from pipelines.platform.workspace import Workspace, remote_state, wait_for_status

MODEL_TIMEOUT = 900.0
FORCE_REASON = "demo: ship the retrain without waiting for the evaluation"


def banner(text: str) -> None:
    print(f"\n{'=' * 100}\n== {text}\n{'=' * 100}", flush=True)


def say(text: str) -> None:
    print(textwrap.fill(text, width=100), flush=True)


def command(text: str) -> None:
    print(f"$ {text}", flush=True)


def short(failures: Counter[str]) -> str:
    """'8050 x HTTP 404 (model 'rossmann' is not served ...)' per kind, most frequent first."""
    parts = []
    for message, n in failures.most_common():
        # The router's bodies are {"error": "..."}, cut at 120 characters by the client.
        m = re.match(r'(HTTP \d+) \{"error":\s*"(.*?)(?:"\}|$)', message, re.S)
        parts.append(f"{n} x {m[1]} ({m[2]})" if m else f"{n} x {message}")
    return "; ".join(parts)


def show_push(push: Any) -> None:
    for line in push.remote_lines():
        if line:
            print(f"  remote: {line}", flush=True)
    print(f"  -> {'accepted' if push.ok else 'REFUSED'}", flush=True)


def train_versions(settings: Settings, model: str) -> tuple[Any, list[str]]:
    from model.data import RawData
    from model.registry import log_and_register
    from model.training import TrainConfig, train
    from pipelines.ci.common import export_client_env
    from pipelines.train import DEFAULT_SYNTHETIC, load_data

    banner("1/8  Train three versions and register them in MLflow (artifacts in LocalStack S3)")
    export_client_env(settings)
    raw = load_data(argparse.Namespace(data_dir=None, stores=None, days=None, seed=None), settings)
    where = settings.data_dir or "generated data ({stores} stores x {days} days, seed {seed})".format(
        **DEFAULT_SYNTHETIC
    )
    say(f"Data: {where}: {len(raw.train):,} store-days.")
    quick = TrainConfig.quick()
    recipes = [
        ("good", "xgboost (random seed 1)", raw, replace(quick, seed=1)),
        ("retrain", "a retrain with the default seed: as good, so it passes the gate", raw, quick),
        (
            "broken",
            "a broken retrain: one shallow round on sales recorded in the wrong unit (halved)",
            RawData(raw.train.assign(Sales=raw.train["Sales"] / 2), raw.store, raw.source),
            TrainConfig(rounds=1, learning_rate=0.01, max_depth=1, early_stopping_rounds=1, baseline_iterations=2),
        ),
    ]
    versions = []
    for label, what, data, config in recipes:
        started = time.perf_counter()
        registered = log_and_register(train(data, config), model)
        assert registered is not None
        versions.append(registered.version)
        print(
            f"-- {label}: {what}: registered v{registered.version} in {time.perf_counter() - started:.0f}s", flush=True
        )
    return raw, versions


_NOISE = (" INFO ", "Warning", "warn(", "color_warning", "per day:")
_DAY_ROW = re.compile(r"^\s+\S+ \d{4}-\d{2}-\d{2}\s")  # feedback's per-day table: in its files, not here


def sluice(*args: str) -> int:
    """Run a sluice command as a person would, its output shown."""
    command("sluice " + " ".join(args))
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True)
    for line in proc.stdout.splitlines() + proc.stderr.splitlines():
        if line.strip() and not any(noise in line for noise in _NOISE) and not _DAY_ROW.match(line):
            print(f"  {line}", flush=True)
    return proc.returncode


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def wait_for_log(settings: Settings, model: str, since: str, rows: int = 200, timeout: float = 90.0) -> int:
    """Wait until the receiver has flushed at least `rows` rows logged since `since` to S3."""
    from pipelines.registry import s3_client
    from serving.inference_log.reader import read_log

    s3 = s3_client(settings)
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n = len(read_log(s3, settings.data_bucket, model, since=since))
        if n >= rows:
            break
        time.sleep(3)
    return n


def watch(settings: Settings, model: str, version: str, rows: Any, traffic_since: float) -> None:
    banner(f"6/8  Watch v{version}: the payload log, and drift against the version's reference sample")
    say(
        "Every request the stand-in answered was posted to the inference-log receiver as KServe's payload "
        "logger posts it (CloudEvents), and stored as Parquet in S3 per model, version and day. "
        "`sluice drift` compares that traffic with the reference sample logged at training, after "
        "resampling the reference to the traffic's weekday x promo x holiday-week mix, so ordinary weeks "
        "do not alarm."
    )
    since = datetime.fromtimestamp(traffic_since, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    logged = wait_for_log(settings, model, since)
    say(f"{logged:,} rows logged since the rollout started.")
    shift_at = utc_now()
    sluice("drift", "--model", model, "--version", version, "--since", since, "--until", shift_at)
    say(
        "Now the clients change what they ask about: a promotion on every day, Saturdays included (Rossmann "
        "never runs promotions on Saturdays, so the reference has none)."
    )
    shifted = rows.assign(Promo=1)
    with Traffic(settings.serve_url, model, shifted, concurrency=4, seed=1) as traffic, BackgroundTraffic(traffic):
        time.sleep(20)
    wait_for_log(settings, model, shift_at, rows=300)
    sluice("drift", "--model", model, "--version", version, "--since", shift_at)
    say(
        "The drift figures also go to Prometheus (through the Pushgateway), where the SluiceDrift alert of "
        "gitops/platform/prometheusrule.yaml fires; in a cluster its webhook sends the `drift` "
        "repository_dispatch that starts the retrain workflow."
    )


def realized_and_retrain(settings: Settings, model: str, raw: Any, rows: Any) -> None:
    remote = settings.gitops_remote_path
    assert remote is not None
    banner("7/8  The actual sales arrive: realized accuracy, then a retrain that releases through Git")
    actuals = settings.state_dir / "demo" / "actuals.csv"
    actuals.parent.mkdir(parents=True, exist_ok=True)
    frame = raw.train[["Store", "Date", "Sales"]].assign(Date=lambda d: d["Date"].dt.strftime("%Y-%m-%d"))
    frame.to_csv(actuals, index=False)
    say(f"Rossmann's sales of a day arrive the next day; here they are the recorded ones ({actuals}).")
    sluice("feedback", "--actuals", str(actuals), "--model", model)
    say(
        "The retrain workflow is what the drift alert dispatches (and what runs on its schedule): it trains on "
        "the newest data, gates the new version against the champion on days neither was fitted on, and when "
        "it passes commits the release change, so the rollout proceeds like any release. Dispatched by hand:"
    )
    command(f"sluice ci run retrain --input preset=quick --input model={model} --wait")
    job = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "ci", "run", "retrain", "--input", "preset=quick",
         "--input", f"model={model}", "--wait", "--timeout", str(MODEL_TIMEOUT)],
        capture_output=True, text=True,
    )  # fmt: skip
    # act's log of the job is long: show the lines that say what happened.
    for line in job.stdout.splitlines():
        if f"[{model}]" in line or "queued job" in line or "Job succeeded" in line or "Job failed" in line:
            print(f"  {line.strip()}", flush=True)
    if job.returncode != 0:
        say("The retrain job failed: `sluice ci log` shows why. Nothing was released.")
        return
    status = remote_state(remote, model).status
    if status.phase != "canary" or status.canary is None:
        say("The retrained version did not beat the champion, so nothing was released (its gate.* tags say why).")
        return
    version = status.canary.version
    say(f"CI committed the release of v{version}; the rollout takes it from here, gated like any release:")
    with Traffic(settings.serve_url, model, rows, concurrency=4) as traffic, BackgroundTraffic(traffic):
        wait_for_status(
            remote,
            model,
            lambda s: s.serves_only(version),
            MODEL_TIMEOUT,
            on_change=narrate,
        )


def narrate(status: Status, entry: git.LogEntry | None) -> None:
    if entry is not None:
        stamp = entry.date[11:19]
        print(f"  [{stamp}] CI: {entry.subject}  ({entry.get('Reason')[:110]})", flush=True)


def run(settings: Settings) -> int:
    model = settings.model_name
    remote = settings.gitops_remote_path
    if remote is None or not (remote / "HEAD").is_file():
        print("the demo needs the embedded GitOps remote: run `make up` first", file=sys.stderr)
        return 1
    started = time.monotonic()
    raw, (good, retrain, broken) = train_versions(settings, model)
    work = Workspace(settings.gitops_url, settings.state_dir / "demo" / "work", name="alice")

    banner(f"2/8  Release v{good}: a commit to the release file, pushed")
    before = remote_state(remote, model).status
    command(f"git clone {settings.gitops_url} {work.path}")
    command(f"sed -i 's/^.*version:.*$/version: {good}/' gitops/models/{model}/release.yaml")
    command(f"git commit -am 'rossmann: release v{good}' && git push")
    work.set_release(model, version=good)
    work.commit(f"{model}: release v{good}")
    push = work.push()
    show_push(push)
    if not push.ok:
        return 1
    rows = request_rows(raw.train)
    with Traffic(settings.serve_url, model, rows, concurrency=4) as traffic, BackgroundTraffic(traffic) as bg:
        if before.phase == "empty":
            say("Nothing served yet, so CI renders it straight to 100% (there is no revision to compare with).")
        else:
            say(f"{before.describe()} from an earlier run, so this release is a canary like any other.")
        wait_for_status(
            remote,
            model,
            lambda s: s.serves_only(good),
            MODEL_TIMEOUT,
            on_change=narrate,
        )
        wait_until_served(settings.serve_url, model, good, MODEL_TIMEOUT)
        served = time.time()
        if early := bg.failed(until=served):
            say(
                f"Until v{good} answered, clients got {sum(early.values())} errors, as in a cluster before the "
                f"first revision is ready: {short(early)}."
            )

        banner(f"3/8  Release v{retrain}: a canary that advances on measured metrics, with nobody typing a command")
        command(f"sed -i 's/^version:.*$/version: {retrain}/' ... && git commit -am ... && git push")
        work.pull()
        work.set_release(model, version=retrain)
        work.commit(f"{model}: release the retrain v{retrain}")
        push = work.push()
        show_push(push)
        say(
            "CI renders a 10% canary; client traffic keeps flowing through the stand-in's router, Prometheus "
            "scrapes every pod, and the CI runner's ticker runs the rollout workflow, which advances on "
            "error rate, p95 latency and the divergence of the mean prediction from the stable revision."
        )
        mark = time.time()
        wait_for_status(
            remote,
            model,
            lambda s: s.serves_only(retrain),
            MODEL_TIMEOUT,
            on_change=narrate,
        )
        shares = bg.seen(since=mark)
        failed = short(bg.failed(since=mark)) or "none"
        say(f"Answered during the rollout, by revision: {dict(shares)}; failures: {failed}.")

        banner("4/8  Name a version that does not exist: the push is refused, nothing is written")
        work.pull()
        work.set_release(model, version="999")
        work.commit(f"{model}: release v999 (a typo)")
        command("git push")
        push = work.push()
        show_push(push)
        work.undo_last_commit()

        banner(f"5/8  Release the broken v{broken}: refused by the gate, then forced, then rolled back on its own")
        work.set_release(model, version=broken)
        work.commit(f"{model}: release v{broken}")
        command("git push")
        push = work.push()
        show_push(push)
        say("Overriding the gate takes a reason, recorded in the status record and the history:")
        work.undo_last_commit()
        work.set_release(model, version=broken)
        work.commit(f"{model}: release v{broken}", force_reason=FORCE_REASON)
        command(f"git commit --amend -m '...' -m 'Sluice-Force: {FORCE_REASON}' && git push")
        push = work.push()
        show_push(push)
        if not push.ok:
            return 1
        wait_for_status(
            remote,
            model,
            lambda s: s.phase == "stable" and s.decision is not None and s.decision.action == "rollback",
            MODEL_TIMEOUT,
            on_change=narrate,
        )
        work.pull()
        release = work.release_path(model).read_text()
        line = next(ln for ln in release.splitlines() if ln.startswith("version:"))
        command(f"git pull && grep ^version gitops/models/{model}/release.yaml")
        print(f"  {line}", flush=True)

    # Outside the clients' loop above: during the shift only the changed clients send.
    watch(settings, model, retrain, rows, traffic_since=mark)
    realized_and_retrain(settings, model, raw, rows)

    banner("8/8  The history, from the commits' Sluice-* trailers")
    command(f"sluice history --model {model}")
    print(format_history(history(remote, model, settings.gitops_branch)[:14]), flush=True)
    say(
        f"Done in {time.monotonic() - started:.0f}s. Look around: MLflow {settings.tracking_uri}, Prometheus "
        f"{settings.metrics_url}, what serves {settings.serve_url}/sluice/standin, CI jobs `sluice ci jobs`, "
        f"your clone {work.path}. `sluice status` checks that Git, the aliases and what serves agree."
    )
    return 0


def main() -> int:
    try:
        return run(load_settings())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except TimeoutError as exc:
        print(f"error: {exc}\nlook at `sluice ci jobs` and `sluice ci log`", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Path", "main"]
