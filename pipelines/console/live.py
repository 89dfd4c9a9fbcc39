"""The Live rollout panel's data: per-revision request rate, 5xx and 4xx shares and p95 latency over
the last hour, from Prometheus, with the thresholds of the release file's gates.

The series are the ones the rollout gates read (pipelines/rollout/metrics.py names them), summed over
pods by the `revision` target label. The figures here are per-second rates over a sliding minute, for
a person to look at; the gates themselves judge `increase()` over a step's whole window, so a chart
can cross a threshold briefly without the canary being rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pipelines.gitops.release import Gates
from pipelines.rollout import metrics

WINDOW = timedelta(hours=1)
STEP_SECONDS = 15.0
RATE = "1m"


@dataclass(frozen=True)
class Line:
    name: str  # the revision (or "all" when the series carry no revision label)
    times: list[datetime]
    values: list[float]


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    unit: str
    lines: list[Line]
    threshold: float | None = None
    threshold_label: str = ""

    @property
    def empty(self) -> bool:
        return not any(line.values for line in self.lines)


@dataclass(frozen=True)
class Live:
    model: str
    source: str
    start: datetime
    end: datetime
    charts: list[Chart] = field(default_factory=list)
    error: str | None = None


def queries(model: str) -> dict[str, str]:
    """PromQL per chart. Router failures (timeouts, refused, reset: never answered by a pod) count as 5xx."""
    m = f'model="{model}"'
    req, router, lat = metrics.REQUESTS, metrics.ROUTER, metrics.LATENCY
    total = f"sum by (revision) (rate({req}{{{m}}}[{RATE}]))"
    failed = f'rate({req}{{{m},outcome="error"}}[{RATE}]) or rate({router}{{{m},code=~"5..|000"}}[{RATE}])'
    server = f"sum by (revision) ({failed})"
    client = f'sum by (revision) (rate({req}{{{m},outcome="invalid"}}[{RATE}]))'
    return {
        "requests": total,
        "server_errors": f"({server}) / ({total})",
        "client_errors": f"({client}) / ({total})",
        "p95": f"1000 * histogram_quantile(0.95, sum by (revision, le) (rate({lat}{{{m}}}[{RATE}])))",
    }


def _lines(rows: list[tuple[dict[str, str], list[tuple[float, float]]]]) -> list[Line]:
    lines = [
        Line(
            labels.get("revision") or "all",
            [datetime.fromtimestamp(t, UTC) for t, _ in points],
            [v for _, v in points],
        )
        for labels, points in rows
    ]
    return sorted(lines, key=lambda line: line.name)


def gather_live(prometheus_url: str, model: str, gates: Gates | None, end: datetime | None = None) -> Live:
    end = end or datetime.now(UTC)
    start = end - WINDOW
    live = Live(model, prometheus_url, start, end)
    q = queries(model)
    try:
        got = {key: _lines(metrics.series(prometheus_url, query, start, end, STEP_SECONDS)) for key, query in q.items()}
    except metrics.MetricsError as exc:
        return Live(model, prometheus_url, start, end, error=str(exc))
    charts = [
        Chart("requests", "Requests per second", "req/s", got["requests"]),
        Chart(
            "server_errors",
            "Server errors (5xx, no answer) / requests",
            "share",
            got["server_errors"],
            gates.max_error_rate if gates else None,
            "gate: max_error_rate",
        ),
        Chart("client_errors", "Client errors (4xx) / requests (no gate)", "share", got["client_errors"]),
        Chart(
            "p95",
            "p95 latency",
            "ms",
            got["p95"],
            gates.max_p95_latency_ms if gates else None,
            "gate: max_p95_latency_ms",
        ),
    ]
    return Live(live.model, live.source, start, end, charts)
