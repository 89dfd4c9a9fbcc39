"""`make demo`: the GitOps story for a newcomer, on the embedded default (platform already up: `make up`).

1. a demo GitOps repository under <state_dir>/demo/: a bare "remote" and a clone, seeded with this
   project's gitops/ folder (release file included, nothing released yet); reset on every run;
2. train v1 and v2 on generated data and register them in MLflow (artifacts in LocalStack S3), plus a
   deliberately broken v3 (one shallow round on sales in the wrong unit: near-constant, too low);
3. promote v1 (straight to 100%), start `sluice serve --gitops` on the clone, which serves what Git
   declares and follows every commit;
4. promote v2: a 10% canary; send traffic; `rollout step` advances 10 -> 50 -> 100 and finalizes on the
   gates in the release file, reading the preview's /metrics;
5. v3: refused by the evaluation gate, forced with --force --reason, rolled back by the divergence
   gate in two commits;
6. `sluice history`, and where to look. The preview server is stopped at the end.

Each step calls the same functions as the `sluice` commands it names (promote, rollout step, history).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipelines import gitrepo
from pipelines.config import REPO_ROOT, Settings, load_settings
from pipelines.train import configure

HTTP_PORT, GRPC_PORT = 8080, 8081
FORCE_REASON = "demo: ship the retrain without waiting for the evaluation"
EXPLAIN = {
    "hold": "Not enough canary requests in this window for a decision: nothing changes in the manifest "
    "(one empty commit records the hold). More traffic, then step again.",
    "advance": "Every gate passed on this step's own traffic (error rate, p95 latency, divergence of the mean "
    "prediction from stable): canaryTrafficPercent moves to the next step.",
    "finalize": "The gates passed at 100%: canaryTrafficPercent is dropped (the canary is now the rolled-out "
    "revision), and MLflow's `champion` alias moves to it, `previous` to the old one.",
    "rollback": "A gate failed: phase 1 sets canaryTrafficPercent to 0 (all traffic back on the rolled-out "
    "revision at once, the new spec kept, as KServe wants); phase 2 restores the stable spec.",
    "restore": "Phase 2 of the rollback: the last manifest that served the stable version fully is restored "
    "byte for byte (so no new revision of anything starts), and MLflow tags the bad version "
    "sluice.rolled_back, so `sluice sync` never promotes it again by itself.",
}


def banner(text: str) -> None:
    print(f"\n{'=' * 100}\n== {text}\n{'=' * 100}", flush=True)


def say(text: str) -> None:
    print(textwrap.fill(text, width=100), flush=True)


def command(text: str) -> None:
    print(f"$ {text}", flush=True)


def _git(repo: Path, *args: str) -> str:
    return gitrepo.git(repo, *args).stdout.strip()


def _port_free(port: int) -> bool:
    """Nothing listens on `port` (a connect test: TIME_WAIT leftovers of the last run do not count)."""
    from pipelines.platform import port_in_use

    return not port_in_use("127.0.0.1", port)


def make_demo_repo(settings: Settings, model: str) -> tuple[Path, Path]:
    """A fresh bare remote and clone under <state_dir>/demo/, seeded with this project's gitops/."""
    base = settings.state_dir / "demo"
    remote, work = base / "remote.git", base / "repo"
    for path in (remote, work):
        if path.exists():
            shutil.rmtree(path)
    base.mkdir(parents=True, exist_ok=True)
    _git(base, "init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    _git(base, "clone", "--quiet", str(remote), str(work))
    _git(work, "checkout", "--quiet", "-B", "main")
    shutil.copytree(REPO_ROOT / "gitops", work / "gitops")
    # The story starts with nothing released: the rendered manifest is CI's output, not part of the seed.
    (work / "gitops" / "models" / model / "inferenceservice.yaml").unlink(missing_ok=True)
    (work / "README.md").write_text(
        "Demo GitOps repository made by `make demo` (pipelines/demo.py); reset on every run.\n"
        "`sluice history --repo .` shows the release history.\n"
    )
    _git(work, "add", ".")
    gitrepo.commit(work, [], "seed: gitops/ from the Sluice project", "", {})
    _git(work, "push", "--quiet", "-u", "origin", "main")
    return remote, work


def registry_reachable(settings: Settings) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(settings.tracking_uri.rstrip("/") + "/health", timeout=3) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def train_versions(settings: Settings, model: str) -> tuple[Any, list[str]]:
    from model.data import RawData
    from model.registry import log_and_register
    from model.training import TrainConfig, train
    from pipelines.train import DEFAULT_SYNTHETIC, load_data

    banner("2/8  Train three versions and register them in MLflow (artifacts in LocalStack S3)")
    import argparse

    args = argparse.Namespace(data_dir=None, stores=None, days=None, seed=None)
    raw = load_data(args, settings)
    where = settings.data_dir or "generated data ({stores} stores x {days} days, seed {seed})".format(
        **DEFAULT_SYNTHETIC
    )
    say(f"Data: {where}: {len(raw.train):,} store-days.")
    full = TrainConfig()
    recipes = [
        ("v1", "xgboost, the full configuration (random seed 1)", raw, replace(full, seed=1)),
        ("v2", "a retrain with the default seed: a little better, so it passes the gate against v1", raw, full),
        (
            "v3",
            "a broken retrain: one shallow boosting round on sales recorded in the wrong unit (halved): "
            "near-constant predictions about half the real level",
            RawData(raw.train.assign(Sales=raw.train["Sales"] / 2), raw.store, raw.source),
            TrainConfig(rounds=1, learning_rate=0.01, max_depth=1, early_stopping_rounds=1, baseline_iterations=2),
        ),
    ]
    versions = []
    for label, what, data, config in recipes:
        print(f"\n-- {label}: {what}", flush=True)
        started = time.perf_counter()
        trained = train(data, config, progress=True)
        registered = log_and_register(trained, model)
        assert registered is not None
        versions.append(registered.version)
        print(
            f"registered {model} v{registered.version} in {time.perf_counter() - started:.0f}s: validation RMSPE "
            f"{trained.metrics['rmspe']:.4f}; artifacts {registered.download_uri}",
            flush=True,
        )
    return raw, versions


def reset_aliases(settings: Settings, model: str, aliases: tuple[str, ...] = ("champion", "previous")) -> str:
    """Remove the aliases `promote`/`rollout` manage; returns what was removed ("" if nothing)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(settings.tracking_uri)
    try:
        current = dict(client.get_registered_model(model).aliases)
    except MlflowException:
        return ""  # no such model yet
    removed = []
    for alias in aliases:
        if alias in current:
            client.delete_registered_model_alias(model, alias)
            removed.append(f"{alias}=v{current[alias]}")
    return ", ".join(removed)


class Demo:
    def __init__(self, settings: Settings, model: str, repo: Path):
        from pipelines.promote import connect, run_evaluation_gate
        from pipelines.release import load_release

        self.settings, self.model, self.repo = settings, model, repo
        self.registry = connect(settings)
        self.gate = run_evaluation_gate(settings)
        self.release = load_release(repo / "gitops" / "models" / model / "release.yaml")
        self.server: Any = None
        self.traffic: Any = None

    # -- commands ----------------------------------------------------------------------------------

    def promote(self, version: str, force: bool = False, reason: str | None = None) -> Any:
        from pipelines.promote import promote

        flags = f" --force --reason '{reason}'" if force else ""
        command(f"sluice promote --model {self.model} --version {version} --repo {self.repo} --push{flags}")
        print(
            "(the evaluation gate compares it with the champion, if there is one: this loads both models)", flush=True
        )
        out = promote(
            self.repo, self.registry, self.model, version, force=force, reason=reason, push=True, gate=self.gate
        )
        print(out.render(), flush=True)
        return out

    def step(self) -> Any:
        from pipelines.metrics_source import read_metrics
        from pipelines.rollout import step

        url = self.server.metrics_url
        command(f"sluice rollout step --model {self.model} --repo {self.repo} --metrics-url {url} --push")
        out = step(self.repo, self.registry, self.model, lambda: read_metrics(self.model, url), push=True)
        print(out.render(), flush=True)
        key = "restore" if out.action == "rollback" and out.message.startswith("restored") else out.action
        if key in EXPLAIN:
            print(flush=True)
            say("Why: " + EXPLAIN[key])
        return out

    def follow(self) -> None:
        """Wait until the preview serves the new HEAD, and show what it serves."""
        status = self.server.wait_for(gitrepo.head(self.repo))
        served = status["models"].get(self.model, {}).get("describe", "nothing")
        print(f"preview now serves (commit {status['commit'][:10]}): {served}", flush=True)

    def send(self, *, until_canary: str | None = None, n: int | None = None) -> Any:
        """Send traffic: `n` requests, or until the canary revision has `min_requests` in this window."""
        minimum = self.release.gates.min_requests
        canary = f"{self.model}-v{until_canary}" if until_canary else None

        def report(r: Any) -> None:
            print(f"   ... {r.summary()}", flush=True)

        if canary is not None:
            print(f"sending requests until {canary} has answered {minimum} (the gates' min_requests)", flush=True)
            result = self.traffic.send(50_000, until=lambda c: c[canary] >= minimum, progress=report)
        else:
            result = self.traffic.send(n or 100, progress=report)
        print(f"sent {result.summary()}", flush=True)
        return result

    def roll_out(self, version: str) -> Any:
        """Traffic and `rollout step` until the rollout of `version` is decided (finalized or rolled back)."""
        from pipelines.promote import model_paths, read_state

        out = None
        for _ in range(12):  # a bound, in case something unexpected keeps holding
            state = read_state(model_paths(self.repo, self.model))
            if state.phase == "stable":
                break
            banner(f"rollout: {state.describe()}")
            if state.phase == "canary":
                self.send(until_canary=version)
            else:  # rolled back to 0%: every request is on the stable revision again
                self.send(n=100)
            out = self.step()
            self.follow()
        return out


def run(settings: Settings) -> int:
    configure(settings)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    from pipelines.preview import PreviewProcess, Traffic, request_rows
    from pipelines.promote import format_history, history

    model = settings.model_name
    if not (REPO_ROOT / "gitops" / "models" / model / "release.yaml").is_file():
        print(
            f"error: gitops/models/{model}/release.yaml does not exist; the demo releases a model with a release file"
        )
        return 2
    if not registry_reachable(settings):
        print(f"error: MLflow does not answer at {settings.tracking_uri}; start the platform first: make up")
        return 2
    busy = [p for p in (HTTP_PORT, GRPC_PORT) if not _port_free(p)]
    if busy:
        print(f"error: port(s) {busy} are in use; the preview server needs them (stop what runs there)")
        return 2

    banner("1/8  A GitOps repository for the demo")
    remote, repo = make_demo_repo(settings, model)
    say(
        f"A bare repository {remote} plays the Git server; {repo} is the clone that `sluice promote` and "
        f"`sluice rollout step` commit to and push from (as CI would). Seeded with this project's gitops/ "
        f"folder: gitops/models/{model}/release.yaml names the rollout steps and gates; nothing is released yet."
    )
    print((repo / "gitops" / "models" / model / "release.yaml").read_text(), flush=True)

    reset = reset_aliases(settings, model)
    if reset:
        say(
            f"The registry follows Git: the demo repository starts empty, so the aliases a previous run left on "
            f"{model} ({reset}) are removed; the first release sets `champion` again."
        )

    raw, (v1, v2, v3) = train_versions(settings, model)
    demo = Demo(settings, model, repo)

    banner(f"3/8  Promote v{v1}: the first release goes straight to 100%")
    demo.promote(v1)

    banner("4/8  Start the preview: `sluice serve --gitops` serves what Git declares, and follows it")
    log = settings.state_dir / "demo" / "serve.log"
    log.unlink(missing_ok=True)
    serve_cmd = f"sluice serve --gitops {repo} --port {HTTP_PORT} --grpc-port {GRPC_PORT}"
    command(f"{serve_cmd} --poll-interval 1 > {log} 2>&1 &")
    server = PreviewProcess(repo, HTTP_PORT, GRPC_PORT, log, poll_seconds=1.0)
    demo.server = server.start()
    code = None
    try:
        say("Loading the model the manifest names (downloaded from S3 with KServe's storage-initializer code)...")
        demo.follow()
        demo.traffic = Traffic(server.url, model, request_rows(raw.train), concurrency=3, seed=7)
        demo.send(n=100)

        banner(f"5/8  Promote v{v2}: a {demo.release.rollout.steps[0]}% canary")
        demo.promote(v2)
        demo.follow()
        say(
            "Each response names the revision that answered (x-sluice-revision); about "
            f"{demo.release.rollout.steps[0]}% of them should come from v{v2}."
        )
        out = demo.roll_out(v2)
        if out is None or out.action != "finalize":
            print(f"\nthe rollout of v{v2} did not finalize ({out and out.message}); stopping the demo here")
            return 1
        champion = demo.registry.get_alias(model, "champion")
        print(f"\nMLflow: champion = v{champion.version if champion else '?'}", flush=True)

        banner(f"6/8  v{v3}, a broken retrain: the evaluation gate refuses it")
        refused = demo.promote(v3)
        if refused.action == "refused":
            say("Refused before anything was written: Git HEAD, the remote and the aliases are unchanged.")
        banner(f"7/8  Force v{v3} anyway (--force --reason): the rollout gates catch it")
        demo.promote(v3, force=True, reason=FORCE_REASON)
        demo.follow()
        demo.roll_out(v3)
        demo.send(n=100)
    finally:
        if demo.traffic is not None:
            demo.traffic.close()
        code = server.stop()

    banner("8/8  The release history, from git log")
    command(f"sluice history --model {model} --repo {repo}")
    print(format_history(history(repo, model)), flush=True)
    champion = demo.registry.get_alias(model, "champion")
    print(
        f"\nMLflow champion: v{champion.version if champion else '?'}; Git serves: "
        f"{_served(repo, model)}; preview server stopped (exit code {code}).",
        flush=True,
    )

    banner("Where to look")
    print(
        textwrap.dedent(f"""\
        MLflow UI (versions, aliases, gate tags):  {settings.tracking_uri}/#/models/{model}
        the demo GitOps repo:                      cd {repo} && git log --stat
                                                   uv run sluice history --repo {repo}
        serve what it declares again:              uv run {serve_cmd}
          then:  curl -s localhost:{HTTP_PORT}/sluice/gitops
                 curl -s -i localhost:{HTTP_PORT}/v2/models/{model}/infer -H 'content-type: application/json' \\
                   -d '{_curl_body(raw)}'
          metrics per revision:  curl -s localhost:{HTTP_PORT}/metrics | grep sluice_inference_requests
        the preview server's log:                  {log}
        stop the platform:                         make down"""),
        flush=True,
    )
    return 0


def _served(repo: Path, model: str) -> str:
    from pipelines.promote import model_paths, read_state

    return read_state(model_paths(repo, model)).describe()


def _curl_body(raw: Any) -> str:
    import json

    from pipelines.preview import request_rows, v2_body

    return json.dumps(v2_body(request_rows(raw.train).head(1)), separators=(",", ":"))


def main() -> int:
    try:
        return run(load_settings())
    except KeyboardInterrupt:
        print("\ninterrupted; the preview server was stopped", file=sys.stderr)
        return 130
    except subprocess.CalledProcessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
