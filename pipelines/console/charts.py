"""Charts as HTML fragments, drawn by plotly.js in the browser.

plotly (already in the lock through evidently) renders the figures; its JavaScript bundle ships inside
the Python package and the console serves it from `/static/plotly.min.js`, so nothing is downloaded at
run time and every page shares one cached copy instead of inlining 4.5 MB.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache

import plotly.graph_objects as go
import plotly.offline

from pipelines.console.actuals import Actuals
from pipelines.console.forecast import Forecast
from pipelines.console.health import Health
from pipelines.console.live import Chart

PLOTLY_JS_PATH = "/static/plotly.min.js"
_LAYOUT = {
    "height": 320,
    "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
    "template": "plotly_white",
    "legend": {"orientation": "h", "y": -0.2},  # below the plot: revision names are long
}
GAP_DAYS = 7  # a forecast starting more days than this after the last actual day: the axis skips them
WEEK_MS = 7 * 24 * 3600 * 1000


@cache
def plotly_js() -> bytes:
    return plotly.offline.get_plotlyjs().encode()


def _html(fig: go.Figure, div_id: str) -> str:
    html: str = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        default_width="100%",  # fit the panel, not plotly's fixed 700 px
        config={"displaylogo": False, "responsive": True},
    )
    return html


def live_chart(chart: Chart, start: datetime, end: datetime) -> str:
    fig = go.Figure()
    for line in chart.lines:
        # Markers too: traffic that began a minute ago is a single point, which a line alone hides.
        fig.add_trace(go.Scatter(x=line.times, y=line.values, mode="lines+markers", marker_size=4, name=line.name))
    if chart.threshold is not None:
        fig.add_hline(
            y=chart.threshold,
            line_dash="dash",
            line_color="firebrick",
            annotation_text=f"{chart.threshold_label} = {chart.threshold:g}",
            annotation_position="top left",
        )
    fig.update_layout(title=chart.title, yaxis_title=chart.unit, **_LAYOUT)
    fig.update_xaxes(range=[start, end])  # always the whole window, however little of it has data
    return _html(fig, f"chart-{chart.key}")


def forecast_chart(forecast: Forecast, actuals: Actuals | None = None) -> str:
    """The forecast, after the store's recent actual sales when there are any. A forecast far past the
    data's end (generated data ends in 2014) would squeeze both lines into two dots at the ends of a
    years-long axis, so the axis skips the days between them and the title says how many."""
    fig = go.Figure()
    title = f"Store {forecast.query.store}: forecast daily sales"
    if actuals is not None and actuals.days and not actuals.error:
        fig.add_trace(
            go.Scatter(
                x=[d.isoformat() for d in actuals.days],
                y=actuals.values,
                mode="lines+markers",
                marker_size=4,
                line_color="#555",
                name=f"actual sales (v{actuals.version}'s data)",
            )
        )
        store, last = forecast.query.store, actuals.days[-1]
        overlaps = bool(forecast.days) and last >= forecast.days[0]
        title = f"Store {store}: " + (
            "actual and forecast daily sales" if overlaps else f"actual daily sales to {last}, then the forecast"
        )
        gap = (forecast.days[0] - actuals.days[-1]).days - 1 if forecast.days else 0
        if gap > GAP_DAYS:
            half_day = timedelta(hours=12)  # break between the days, so both end points stay drawn
            skipped = [(actuals.days[-1] + half_day).isoformat(), (forecast.days[0] - half_day).isoformat()]
            # plotly's autorange pads as if the skipped years were there: set the range to the data.
            shown = [(actuals.days[0] - half_day).isoformat(), (forecast.days[-1] + half_day).isoformat()]
            # Weekly ticks: plotly's own fall in the skipped years and vanish. The title gives the years.
            fig.update_xaxes(rangebreaks=[{"bounds": skipped}], range=shown, dtick=WEEK_MS, tickformat="%b %d")
            title = f"Store {store}: actual sales to {last}, forecast from {forecast.days[0]} (the axis skips the gap)"
    fig.add_trace(
        go.Scatter(
            x=[d.isoformat() for d in forecast.days],
            y=forecast.values,
            mode="lines+markers",
            name=f"v{forecast.model_version} forecast" if forecast.model_version else "forecast",
        )
    )
    fig.update_layout(title=title, yaxis_title="sales", **_LAYOUT)
    return _html(fig, "chart-forecast")


def contributions_chart(forecast: Forecast, top: int = 12) -> str:
    """The features that move this store's forecast most: mean TreeSHAP contribution to log1p(sales)."""
    if not forecast.contributions:
        return ""
    shown = forecast.contributions[:top][::-1]  # plotly draws the first bar at the bottom
    fig = go.Figure(
        go.Bar(
            x=[v for _, v in shown],
            y=[n for n, _ in shown],
            orientation="h",
            marker_color=["#2f9e44" if v >= 0 else "#e03131" for _, v in shown],
        )
    )
    layout = {**_LAYOUT, "height": 60 + 24 * len(shown)}
    fig.update_layout(
        title="Why: mean contribution to log1p(sales) over the open days", xaxis_title="log1p(sales)", **layout
    )
    return _html(fig, "chart-contributions")


def realized_chart(health: Health) -> str:
    """Realized RMSPE per version and sales day, as `sluice feedback` logged it."""
    lines = [v for v in health.versions if v.daily]
    if not lines:
        return ""
    fig = go.Figure()
    for v in lines:
        days, values = [t for t, _ in v.daily], [r for _, r in v.daily]
        fig.add_trace(go.Scatter(x=days, y=values, mode="lines+markers", marker_size=4, name=f"v{v.version}"))
    fig.update_layout(title="Realized RMSPE per sales day (open days)", yaxis_title="RMSPE", **_LAYOUT)
    return _html(fig, "chart-realized")
