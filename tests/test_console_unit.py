"""The console's data functions and web layer without a platform: real git repositories for the
releases panel, sources that are down for the others, input validation through Starlette's client.

The live and forecast panels with data are checked against a real platform in test_console.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pandas as pd
import pytest
import yaml
from gitops_helpers import RELEASE
from starlette.testclient import TestClient

from pipelines.config import Settings
from pipelines.console import actuals, charts, forecast, live, redact, releases
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


# Recent actual sales: the store's days from the data the answering version was trained on.

SMALL = "synthetic:stores=3,days=90,seed=3,start=2014-01-01"  # ends 2014-03-31


def _forecast(store: int, start: date, days: int, version: str = "3") -> forecast.Forecast:
    q = forecast.ForecastQuery("rossmann", store, start, start + timedelta(days=days - 1))
    return forecast.Forecast(q, "http://serve/v2", q.days, [100.0 + i for i in range(days)], version, "")


class _Registry:
    """MlflowClient's get_model_version, with the tags a version carries."""

    def __init__(self, tags: dict[str, str]):
        self.tags = tags

    def get_model_version(self, model: str, version: str) -> SimpleNamespace:
        return SimpleNamespace(tags=self.tags)


def _gather(
    f: forecast.Forecast, tags: dict[str, str], load: Callable[[str], pd.DataFrame] = actuals.load_sales
) -> actuals.Actuals:
    return actuals.gather_actuals("http://mlflow", f, load, _Registry(tags))


def _sales(rows: list[tuple[int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {"Store": [r[0] for r in rows], "Date": pd.to_datetime([r[1] for r in rows]), "Sales": [r[2] for r in rows]}
    )


def test_actuals_are_six_weeks_before_the_forecast_or_before_the_datas_end() -> None:
    last = date(2015, 7, 31)
    # A forecast right after the data: the 42 days before it.
    assert actuals.window(date(2015, 8, 1), date(2015, 8, 14), last) == (date(2015, 6, 20), last)
    # Long after the data: the data's last 42 days (the chart skips the gap).
    assert actuals.window(date(2026, 1, 1), date(2026, 1, 14), last) == (date(2015, 6, 20), last)
    # Inside the data: 42 days before, and the forecast's own days next to it.
    assert actuals.window(date(2015, 7, 1), date(2015, 7, 10), last) == (date(2015, 5, 20), date(2015, 7, 10))


def test_store_days_picks_one_store_inside_the_window_by_day() -> None:
    frame = _sales([(1, "2015-07-03", 30), (2, "2015-07-02", 99), (1, "2015-07-01", 10), (1, "2015-07-02", 20)])
    assert actuals.store_days(frame, 1, date(2015, 7, 2), date(2015, 7, 3)) == [
        (date(2015, 7, 2), 20.0),
        (date(2015, 7, 3), 30.0),
    ]
    assert actuals.store_days(frame, 3, date(2015, 7, 1), date(2015, 7, 3)) == []


def test_data_that_is_not_on_this_machine_is_said_not_replaced(tmp_path: Path) -> None:
    gone = f"dir:{tmp_path / 'gone'}"
    with pytest.raises(actuals.ActualsUnavailable):
        actuals.load_sales(gone)  # never ROSSMANN_DATA_DIR or default generated data instead
    got = _gather(_forecast(1, date(2015, 8, 1), 7), {"data.source": gone})
    assert got.error == f"actual sales: the data behind v3 ({gone}) is not on this machine" and not got.days
    untagged = _gather(_forecast(1, date(2015, 8, 1), 7), {})
    assert untagged.error is not None and "v3 has no data.source tag" in untagged.error


def test_mlflow_down_is_an_actuals_message() -> None:
    class Down:
        def get_model_version(self, model: str, version: str) -> None:
            raise ConnectionError("refused")

    got = actuals.gather_actuals("http://127.0.0.1:1", _forecast(1, date(2015, 8, 1), 7), actuals.load_sales, Down())
    assert got.error is not None and "MLflow at http://127.0.0.1:1 did not answer" in got.error


def test_actuals_from_generated_data_rebuilt_by_its_seed() -> None:
    frame = actuals.load_sales(SMALL)
    assert list(frame.columns) == ["Store", "Date", "Sales"]
    got = _gather(_forecast(2, date(2014, 4, 1), 14), {"data.source": SMALL}, lambda s: frame)
    assert got.error is None and got.source == SMALL and got.last_day == date(2014, 3, 31)
    assert got.days[0] == date(2014, 2, 18) and got.days[-1] == date(2014, 3, 31) and len(got.days) == 42
    expected = frame[(frame.Store == 2) & (frame.Date == "2014-03-31")].Sales.item()
    assert got.values[-1] == expected
    missing = _gather(_forecast(9, date(2014, 4, 1), 7), {"data.source": SMALL}, lambda s: frame)
    assert missing.error is not None and "store 9 is not in it" in missing.error


def test_table_rows_put_actuals_before_the_forecast_and_next_to_it_where_both_exist() -> None:
    f = _forecast(1, date(2015, 7, 30), 3)  # 07-30 .. 08-01
    a = actuals.Actuals("3", SMALL, [date(2015, 7, 29), date(2015, 7, 30)], [5.0, 6.0], date(2015, 7, 30))
    rows = actuals.table_rows(f, a)
    got = [(r.day.day, r.actual, r.forecast) for r in rows]
    assert got == [(29, 5.0, None), (30, 6.0, 100.0), (31, None, 101.0), (1, None, 102.0)]
    assert [r.actual for r in actuals.table_rows(f, actuals.Actuals("3", "", error="down"))] == [None] * 3


def test_the_forecast_chart_draws_actuals_and_skips_a_long_gap() -> None:
    a = actuals.Actuals("3", SMALL, [date(2014, 3, 30), date(2014, 3, 31)], [5.0, 6.0], date(2014, 3, 31))
    html = charts.forecast_chart(_forecast(1, date(2026, 1, 1), 7), a)
    assert "actual sales (v3's data)" in html and "v3 forecast" in html
    assert "rangebreaks" in html and "actual sales to 2014-03-31, forecast from 2026-01-01" in html
    right_after = charts.forecast_chart(_forecast(1, date(2014, 4, 1), 7), a)
    assert "actual sales" in right_after and "rangebreaks" not in right_after


def test_the_forecast_page_shows_actuals_or_says_why_not(
    tmp_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.console import app as console_app

    start = date(2014, 4, 1)
    monkeypatch.setattr(console_app, "gather_forecast", lambda url, q: _forecast(q.store, q.start, len(q.days)))
    tags = {"data.source": SMALL}
    monkeypatch.setattr(actuals, "source_of", lambda uri, model, version, client=None: tags["data.source"])
    client = TestClient(create_app(tmp_settings))
    params = {"store": "1", "start": start.isoformat(), "end": (start + timedelta(days=6)).isoformat()}
    page = client.get("/forecast", params=params)
    assert page.status_code == 200 and 'id="actuals-source"' in page.text
    assert len(re.findall(r'data-actual="', page.text)) == 42 and len(re.findall(r'data-value="', page.text)) == 7
    tags["data.source"] = f"dir:{tmp_path / 'elsewhere'}"
    page = client.get("/forecast", params=params)
    assert page.status_code == 200 and 'id="actuals-down"' in page.text and "is not on this machine" in page.text
    assert 'data-actual="' not in page.text and len(re.findall(r'data-value="', page.text)) == 7


def test_actuals_from_a_data_folder_read_three_columns(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text(
        "Store,DayOfWeek,Date,Sales,Customers,Open,Promo,StateHoliday,SchoolHoliday\n"
        "2,5,2015-07-31,5263,555,1,1,0,1\n"
        "1,5,2015-07-31,6064,625,1,1,0,1\n"
        "1,4,2015-07-30,8314,821,1,1,0,1\n"
    )
    frame = actuals.load_sales(f"dir:{tmp_path}")
    assert frame.to_dict("list") == {
        "Store": [1, 1, 2],
        "Date": [pd.Timestamp("2015-07-30"), pd.Timestamp("2015-07-31"), pd.Timestamp("2015-07-31")],
        "Sales": [8314.0, 6064.0, 5263.0],
    }
    (tmp_path / "train.csv").write_text("Store,Date,Sales\n1,2015-07-31,lots\n")
    got = _gather(_forecast(1, date(2015, 8, 1), 7), {"data.source": f"dir:{tmp_path}"})
    assert got.error is not None and "could not be read" in got.error
