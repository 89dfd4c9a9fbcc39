"""The console's data functions and web layer without a platform: real git repositories for the
releases panel, sources that are down for the others, input validation through Starlette's client.

The live and forecast panels with data are checked against a real platform in test_console.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
import yaml
from gitops_helpers import RELEASE
from starlette.testclient import TestClient

from pipelines.config import Settings
from pipelines.console import charts, forecast, live, redact, releases
from pipelines.console.app import create_app
from pipelines.gitops import git
from pipelines.gitops.status import Canary, Decision, Served, Status, dump_status
from pipelines.platform.traffic import INPUT_COLUMNS

MODEL = "shop"
DOWN = "http://127.0.0.1:1"  # port 1: connections are refused at once
LEAK = "hunter2"  # a made-up credential that must never reach a page


def _served(version: str) -> dict[str, str]:
    return {"version": version, "storage_uri": f"s3://b/{version}", "revision": f"rev{version}" * 3}


def _commit(work: Path, status: Status, release_version: str, trailers: dict[str, str]) -> str:
    folder = work / "gitops" / "models" / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    release = {"model": MODEL, "version": int(release_version), **RELEASE}
    (folder / "release.yaml").write_text("# people edit this\n" + yaml.safe_dump(release, sort_keys=False))
    (folder / "status.yaml").write_text(dump_status(status))
    sha = git.commit(work, ["gitops"], f"{MODEL}: {trailers['Action']}", "", {"Model": MODEL, **trailers})
    git.git(work, "push", "--quiet", "origin", "HEAD:refs/heads/main")
    return sha


@pytest.fixture
def gitops(tmp_path: Path, settings_factory: Callable[..., Settings]) -> tuple[Settings, list[str]]:
    """A bare remote with a release, a canary at 10% and its last decision, as CI leaves them."""
    remote, work = tmp_path / "gitops.git", tmp_path / "work"
    git.git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    git.git(tmp_path, "clone", "--quiet", str(remote), str(work))
    git.git(work, "checkout", "--quiet", "-b", "main")
    first = _commit(
        work,
        Status(
            model=MODEL,
            phase="stable",
            stable=Served(**_served("1")),
            decision=Decision(action="release", reason="first release", at="2026-01-01T00:00:00Z"),
        ),
        "1",
        {"Action": "release", "Version": "1", "Step": "100", "Reason": "first release"},
    )
    second = _commit(
        work,
        Status(
            model=MODEL,
            phase="canary",
            stable=Served(**_served("1")),
            canary=Canary(**_served("2"), percent=10),
            decision=Decision(action="canary", reason="v2 passed <script>x()</script>", at="2026-01-02T00:00:00Z"),
        ),
        "2",
        {"Action": "promote", "Version": "2", "Step": "10", "Reason": "v2 passed evaluation", "Stable-Version": "1"},
    )
    settings = settings_factory(
        tmp_path / "state",
        SLUICE_GITOPS_REMOTE=str(remote),
        MLFLOW_TRACKING_URI="http://someone:" + LEAK + "@127.0.0.1:1",  # nothing listens: MLflow is down
        AWS_SECRET_ACCESS_KEY=LEAK,
        PROMETHEUS_URL=DOWN,
    )
    return settings, [first, second]


def test_releases_panel_reads_status_and_history_from_git(gitops: tuple[Settings, list[str]]) -> None:
    settings, shas = gitops
    got = releases.gather_releases(settings)
    assert got.error is None and got.head == shas[1]
    assert got.registry_error is not None and "MLflow" in got.registry_error  # down, and said so
    (m,) = got.models
    assert m.status is not None and m.status.phase == "canary"
    assert m.status.canary is not None and (m.status.canary.version, m.status.canary.percent) == ("2", 10)
    assert [(h.action, h.version, h.sha) for h in m.history] == [("promote", "2", shas[1]), ("release", "1", shas[0])]
    assert m.gates is not None and m.gates.max_error_rate == RELEASE["gates"]["max_error_rate"]
    (rollback,) = m.suggestions
    assert "-version: 2" in rollback.diff and "+version: 1  # roll back to v1" in rollback.diff
    assert rollback.commands[-1] == "git push"


def test_releases_page_renders_the_canary_and_history(gitops: tuple[Settings, list[str]]) -> None:
    settings, shas = gitops
    page = TestClient(create_app(settings)).get("/releases")
    assert page.status_code == 200
    assert 'data-phase="canary"' in page.text
    assert '<span class="canary-percent">10</span>%' in page.text
    assert shas[1][:10] in page.text and shas[0][:10] in page.text
    assert "git push" in page.text and "+version: 1" in page.text
    assert "v2 passed &lt;script&gt;x()&lt;/script&gt;" in page.text and "<script>x()" not in page.text
    assert "hunter2" not in page.text  # neither the S3 key nor the password in the tracking URI
    assert "http://127.0.0.1:1/#/models/shop/versions/2" in page.text


def test_a_remote_that_is_not_local_is_mirrored(
    gitops: tuple[Settings, list[str]], settings_factory: Callable[..., Settings]
) -> None:
    settings, shas = gitops
    remote = settings.gitops_remote_path
    assert remote is not None
    # A URL with a host is "not local" (as a GitHub URL is): the console fetches it into a mirror.
    as_url = settings_factory(settings.state_dir, SLUICE_GITOPS_REMOTE=f"file://localhost{remote}")
    assert as_url.gitops_remote_path is None
    got = releases.gather_releases(as_url, with_registry=False)
    assert got.error is None and got.head == shas[1] and got.models[0].status is not None


def test_missing_repository_is_a_panel_message_not_a_500(tmp_settings: Settings) -> None:
    page = TestClient(create_app(tmp_settings)).get("/releases")
    assert page.status_code == 200
    assert 'id="releases-down"' in page.text and "run `sluice up`" in page.text


def test_live_page_says_prometheus_is_down(gitops: tuple[Settings, list[str]]) -> None:
    settings, _ = gitops
    page = TestClient(create_app(settings)).get("/live", params={"model": MODEL})
    assert page.status_code == 200
    assert 'id="live-down"' in page.text and "Prometheus is unavailable" in page.text


def test_the_live_panel_reads_only_its_models_gates(gitops: tuple[Settings, list[str]]) -> None:
    settings, _ = gitops
    got = releases.gather_gates(settings, MODEL)
    assert got.models == [MODEL] and got.error is None
    assert got.gates is not None and got.gates.max_p95_latency_ms == RELEASE["gates"]["max_p95_latency_ms"]
    assert releases.gather_gates(settings, "other").gates is None


def test_live_queries_split_server_and_client_errors_per_revision() -> None:
    q = live.queries("shop")
    assert 'outcome="error"' in q["server_errors"] and 'code=~"5..|000"' in q["server_errors"]
    assert 'outcome="invalid"' in q["client_errors"] and "5.." not in q["client_errors"]
    assert all("by (revision" in query for query in q.values())
    assert q["p95"].startswith("1000 * histogram_quantile(0.95")


def test_live_chart_draws_the_gate_threshold() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    chart = live.Chart("p95", "p95 latency", "ms", [live.Line("rev-a", [now], [12.0])], 250.0, "gate: max_p95")
    html = charts.live_chart(chart, now - live.WINDOW, now)
    assert 'id="chart-p95"' in html and "gate: max_p95 = 250" in html and "rev-a" in html
    assert "cdn.plot.ly" not in html  # no runtime download


def test_plotly_js_is_served_from_the_package(tmp_settings: Settings) -> None:
    got = TestClient(create_app(tmp_settings)).get(charts.PLOTLY_JS_PATH)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/javascript")
    assert len(got.content) > 1_000_000


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"store": "abc", "start": "2015-08-01", "end": "2015-08-02"}, "store"),
        ({"store": "0", "start": "2015-08-01", "end": "2015-08-02"}, "store"),
        ({"store": "-3", "start": "2015-08-01", "end": "2015-08-02"}, "store"),
        ({"store": "1", "start": "08/01/2015", "end": "2015-08-02"}, "start"),
        ({"store": "1", "start": "2015-08-01"}, "end"),
        ({"store": "1", "start": "2015-08-10", "end": "2015-08-01"}, "end"),
        ({"store": "1", "start": "2015-08-01", "end": "2015-09-12"}, "end"),  # 43 days
        ({"store": "1", "start": "2015-08-01", "end": "2015-08-02", "promo": "maybe"}, "promo"),
        ({"store": "1", "start": "2015-08-01", "end": "2015-08-02", "model": "Bad Name"}, "model"),
    ],
)
def test_bad_forecast_input_is_a_400_naming_the_field(
    tmp_settings: Settings, params: dict[str, str], field: str
) -> None:
    page = TestClient(create_app(tmp_settings)).get("/forecast", params=params)
    assert page.status_code == 400
    assert re.search(rf'data-field="{field}"', page.text), page.text[-600:]


def test_forty_two_days_is_the_limit() -> None:
    q = forecast.parse_query({"store": "7", "start": "2015-08-01", "end": "2015-09-11"}, "rossmann")
    assert len(q.days) == forecast.MAX_DAYS and q.store == 7 and not q.promo


def test_the_v2_request_follows_the_signature() -> None:
    q = forecast.ForecastQuery("rossmann", 3, date(2015, 8, 1), date(2015, 8, 3), promo=True)  # Sat..Mon
    body = forecast.v2_request(q)
    cols = {i["name"]: i for i in body["inputs"]}
    assert list(cols) == INPUT_COLUMNS
    assert cols["DayOfWeek"]["data"] == [6, 7, 1] and cols["Open"]["data"] == [1, 0, 1]
    assert cols["Promo"]["data"] == [1, 1, 1] and cols["Date"]["datatype"] == "BYTES"
    assert all(i["shape"] == [3] for i in body["inputs"])


def test_an_endpoint_that_is_down_is_a_panel_message(tmp_settings: Settings) -> None:
    params = {"store": "1", "start": "2015-08-01", "end": "2015-08-03"}
    page = TestClient(create_app(tmp_settings)).get("/forecast", params=params)
    assert page.status_code == 200
    assert 'id="forecast-down"' in page.text and "did not answer" in page.text


def test_an_endpoint_refusal_is_a_400_with_its_message() -> None:
    # The V2 server's 4xx body, as serving/errors.py words it; a stub transport stands in for it here
    # (the real endpoint is exercised in test_console.py).
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": "Store: unknown store 99999"})

    q = forecast.ForecastQuery("rossmann", 99999, date(2015, 8, 1), date(2015, 8, 1))
    with httpx.Client(transport=httpx.MockTransport(refuse)) as client:
        got = forecast.gather_forecast("http://127.0.0.1:1", q, client)
    assert got.client_error and got.error is not None and "unknown store 99999" in got.error


@pytest.mark.parametrize(
    "remote",
    ["https://github.com/o/r.git", "https://github.com/o/r", "git@github.com:o/r.git", "ssh://git@github.com/o/r.git"],
)
def test_history_links_commits_on_github(remote: str) -> None:
    assert releases.commit_url(remote, "abc123") == "https://github.com/o/r/commit/abc123"


def test_a_local_remote_has_no_commit_link() -> None:
    assert releases.commit_url("/srv/gitops.git", "abc123") == ""
    assert releases.commit_url("https://gitlab.example/o/r.git", "abc123") == ""


def test_urls_lose_their_credentials() -> None:
    assert redact.redact_url("https://user:" + "tok" + "@github.com/o/r.git") == "https://github.com/o/r.git"
    assert redact.redact_url("/srv/gitops.git") == "/srv/gitops.git"
    said = "cannot reach http://a:" + "b@h:1/x and ssh://git@host/r: refused"
    assert redact.redact_url(said) == "cannot reach http://h:1/x and ssh://host/r: refused"
    assert (
        releases.mlflow_version_url("http://u:" + "p@mlflow:5000/", "m", "3")
        == "http://mlflow:5000/#/models/m/versions/3"
    )
    assert releases.mlflow_version_url("sqlite:///x.db", "m", "3") == ""


def test_mean_contributions_cover_open_days_only_and_leave_out_the_bias() -> None:
    from pipelines.console.forecast import mean_contributions

    output = {
        "parameters": {"feature_names": "Promo,DayOfWeek,bias"},
        "data": [[0.5, -0.1, 8.0], [0.3, 0.3, 8.0], [9, 9, 9]],
    }
    means = mean_contributions(output, [5000.0, 4000.0, 0.0])  # the third day is closed: forecast 0
    assert means == [("Promo", pytest.approx(0.4)), ("DayOfWeek", pytest.approx(0.1))]
    assert mean_contributions(None, [1.0]) == []
    assert mean_contributions({"parameters": {"feature_names": "a,bias"}, "data": [1.0]}, [1.0, 2.0]) == []
