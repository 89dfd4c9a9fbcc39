"""The console on the real embedded platform, read as a person reads it.

`sluice up` (the `platform` fixture) starts the console next to everything else. A model of its own is
released by `git push` from a person's clone, exactly as in test_git_push; then the console's pages,
fetched over HTTP from the process `sluice up` started, must show what Git says, live traffic from
Prometheus, and a forecast equal to the one a direct V2 call returns.
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest

from pipelines.config import Settings
from pipelines.console.forecast import ForecastQuery, infer_url, v2_request
from pipelines.gitops import git
from pipelines.platform import console
from pipelines.platform.traffic import Traffic, request_rows, wait_until_served
from pipelines.platform.workspace import Workspace, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TIMEOUT = 240.0


@dataclass
class Released:
    settings: Settings
    model: str
    version: str
    sha: str  # the remote's head once CI released it
    rows: object  # request rows for traffic
    first_day: date  # the day after the training data
    next_version: str  # as good as `version`: its canary passes the evaluation gate
    work: Workspace  # the person's clone


@pytest.fixture(scope="module")
def released(platform: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Released]:
    from model.registry import log_and_register
    from model.synthetic import generate
    from model.training import TrainConfig, train
    from pipelines.ci.common import export_client_env

    model = f"console-{uuid.uuid4().hex[:6]}"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in (platform.aws_env() | {"MLFLOW_TRACKING_URI": platform.tracking_uri}).items():
            mp.setenv(k, v)
        export_client_env(platform)
        raw = generate(stores=5, days=120, seed=5)
        v1, v2 = (log_and_register(train(raw, TrainConfig.quick()), model) for _ in range(2))
    assert v1 is not None and v2 is not None
    work = Workspace(platform.gitops_url, tmp_path_factory.mktemp("bob") / "gitops", name="bob")
    work.add_model(model)
    work.set_release(model, version=v1.version)
    work.commit(f"{model}: release v{v1.version}")
    pushed = work.push()
    assert pushed.ok, pushed.output
    remote = platform.gitops_remote_path
    assert remote is not None
    version = v1.version
    wait_for_status(remote, model, lambda s: s.serves_only(version), TIMEOUT)
    wait_until_served(platform.serve_url, model, v1.version)
    last = pd.to_datetime(raw.train["Date"]).max().date()
    yield Released(
        platform,
        model,
        v1.version,
        git.head(remote),
        request_rows(raw.train),
        last + timedelta(days=1),
        v2.version,
        work,
    )


def get(settings: Settings, path: str, **params: str) -> tuple[httpx.Response, float]:
    """The page, and the seconds a second request for it took (the first one warms plotly and the
    runtime; the figure printed is the one a person reloading sees)."""
    url = f"{settings.console_url.rstrip('/')}{path}"
    httpx.get(url, params=params, timeout=30)
    started = time.perf_counter()
    resp = httpx.get(url, params=params, timeout=30)
    return resp, time.perf_counter() - started


def test_sluice_up_started_the_console_on_loopback(platform: Settings) -> None:
    assert console.healthy(platform)
    assert platform.console_host == "127.0.0.1"


def test_the_releases_page_shows_what_git_says(released: Released) -> None:
    page, seconds = get(released.settings, "/releases")
    print(f"/releases: {seconds * 1000:.0f} ms")
    assert page.status_code == 200
    section = page.text.split(f'id="model-{released.model}"', 1)[1].split("</section>", 1)[0]
    assert 'data-phase="stable"' in section
    assert f">v{released.version}</a>" in section
    assert re.search(r'<tr class="action-release">.*?' + released.sha[:10], section, re.S)


def test_a_forecast_equals_a_direct_v2_call(released: Released) -> None:
    start, end = released.first_day, released.first_day + timedelta(days=13)
    page, seconds = get(
        released.settings, "/forecast", model=released.model, store="1", start=start.isoformat(), end=end.isoformat()
    )
    print(f"/forecast: {seconds * 1000:.0f} ms")
    assert page.status_code == 200, page.text[-500:]
    shown = [float(v) for v in re.findall(r'data-value="([^"]+)"', page.text)]
    query = ForecastQuery(released.model, 1, start, end)
    direct = httpx.post(infer_url(released.settings.serve_url, released.model), json=v2_request(query), timeout=30)
    assert direct.status_code == 200
    assert shown == direct.json()["outputs"][0]["data"]
    assert len(shown) == 14 and any(v > 0 for v in shown)
    assert f'id="forecast-version">{released.version}<' in page.text
    # The served version explains itself: its contributions are charted under the forecast.
    assert 'id="contributions"' in page.text and "chart-contributions" in page.text
    # Recent actual sales: the 42 days before the forecast, from the data v1 was trained on (the
    # console regenerates it from v1's data.source tag: same stores, days and seed).
    actual = [float(v) for v in re.findall(r'data-actual="([^"]+)"', page.text)]
    assert 'id="actuals-source"' in page.text and len(actual) == 42 and any(v > 0 for v in actual)


def test_the_live_page_charts_served_traffic(released: Released) -> None:
    with Traffic(released.settings.serve_url, released.model, released.rows, rows_per_request=3) as traffic:
        result = traffic.send(150)
    assert result.total == 150 and not result.failures
    deadline = time.monotonic() + 90
    while True:
        page, seconds = get(released.settings, "/live", model=released.model)
        assert page.status_code == 200
        if 'id="panel-requests" data-empty="no"' in page.text and 'id="panel-p95" data-empty="no"' in page.text:
            break
        assert time.monotonic() < deadline, "no requests charted within 90 s of the traffic"
        time.sleep(3)
    print(f"/live: {seconds * 1000:.0f} ms")
    assert "gate: max_p95_latency_ms = 250" in page.text  # the release file's threshold, drawn
    assert 'id="live-down"' not in page.text


def test_bad_input_is_a_400_from_the_running_console(released: Released) -> None:
    bad = {"model": released.model, "store": "x1", "start": "2015-01-01", "end": "2015-01-02"}
    page, _ = get(released.settings, "/forecast", **bad)
    assert page.status_code == 400 and 'data-field="store"' in page.text
    log = Path(released.settings.logs_dir / f"{console.SERVICE}.log").read_text()
    assert "Traceback" not in log


def test_a_canary_shows_at_its_share_and_its_rollback_in_the_history(released: Released) -> None:
    """Release the next version by git push: the page shows the canary at 10% (too little traffic
    to advance: it holds) and the release-file change that rolls it back; pushing that change
    aborts the canary, and the rollback appears in the history."""
    model, v1, v2 = released.model, released.version, released.next_version
    remote = released.settings.gitops_remote_path
    assert remote is not None
    work = released.work
    work.pull()
    work.set_release(model, version=v2)
    work.commit(f"{model}: release v{v2}")
    assert work.push().ok
    wait_for_status(remote, model, lambda s: s.phase == "canary", TIMEOUT)
    page, _ = get(released.settings, "/releases")
    section = page.text.split(f'id="model-{model}"', 1)[1].split("</section>", 1)[0]
    assert 'data-phase="canary"' in section
    assert re.search(rf'>v{v2}</a> at <span class="canary-percent">10</span>%', section), section
    assert f"-version: {v2}" in section and f"+version: {v1}  # roll back to v{v1}" in section

    work.pull()
    work.set_release(model, version=v1)  # the change the page showed
    work.commit(f"{model}: roll back to v{v1}")
    assert work.push().ok
    wait_for_status(remote, model, lambda s: s.serves_only(v1), TIMEOUT)
    page, _ = get(released.settings, "/releases")
    section = page.text.split(f'id="model-{model}"', 1)[1].split("</section>", 1)[0]
    assert 'data-phase="stable"' in section
    rollbacks = re.findall(r'<tr class="action-rollback">.*?</tr>', section, re.S)
    assert any("names the stable" in row for row in rollbacks), rollbacks


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    return path


def test_a_person_reads_the_console_in_chromium(released: Released, tmp_path: Path) -> None:
    """Debian's Chromium driven by Playwright (never `playwright install`: the system browser runs).
    Screenshots of each panel land in this test's tmp folder."""
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    base = released.settings.console_url.rstrip("/")
    start, end = released.first_day, released.first_day + timedelta(days=6)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{base}/releases")
            section = page.locator(f"#model-{released.model}")
            assert section.locator(".phase").inner_text() == "stable"
            assert section.locator(".stable-version a").inner_text() == f"v{released.version}"
            section.screenshot(path=str(tmp_path / "releases.png"))

            section.get_by_role("link", name="forecast").click()
            page.fill("input[name=store]", "2")
            page.fill("input[name=start]", start.isoformat())
            page.fill("input[name=end]", end.isoformat())
            page.get_by_role("button", name="Forecast").click()
            page.wait_for_selector("#chart-forecast .main-svg", timeout=15_000)  # plotly drew it
            shown = [float(v) for v in page.locator("#forecast-table td[data-value]").evaluate_all(
                "cells => cells.map(c => c.dataset.value)")]  # fmt: skip
            query = ForecastQuery(released.model, 2, start, end)
            direct = httpx.post(infer_url(released.settings.serve_url, released.model), json=v2_request(query))
            assert shown == direct.json()["outputs"][0]["data"]
            page.screenshot(path=str(tmp_path / "forecast.png"), full_page=True)

            page.fill("input[name=store]", "abc")
            page.get_by_role("button", name="Forecast").click()
            assert page.locator("#input-error .error-field").inner_text() == "store"

            page.goto(f"{base}/live?model={released.model}")
            page.wait_for_selector("#chart-requests .main-svg", timeout=15_000)
            assert page.locator("#live-down").count() == 0
            page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
        finally:
            browser.close()
    print(f"screenshots: {sorted(p.name for p in tmp_path.glob('*.png'))} in {tmp_path}")
