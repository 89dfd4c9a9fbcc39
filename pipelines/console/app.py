"""The console's web layer: Starlette routes rendering Jinja templates from the data functions.

Read-only: every route is a GET and nothing here writes to Git, MLflow or the endpoint. Each panel
gathers its own source; a source that is down becomes a message in that panel (the page still
answers 200), bad input a 400 naming the field, and only a fault of the console itself a 500.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from pipelines.config import Settings
from pipelines.console import charts
from pipelines.console.actuals import gather_actuals, load_sales, table_rows
from pipelines.console.forecast import MAX_DAYS, InputError, gather_forecast, parse_model, parse_query
from pipelines.console.health import gather_health, report_html
from pipelines.console.live import gather_live
from pipelines.console.redact import finalize, redact_url
from pipelines.console.releases import commit_url, gather_gates, gather_releases, mlflow_version_url

log = logging.getLogger("sluice.console")
T = TypeVar("T")
TEMPLATES = Path(__file__).parent / "templates"


def guarded(what: str, fn: Callable[[], T]) -> tuple[T | None, str | None]:
    """Run a panel's gathering; a fault in it (a bug, an unexpected answer) fails the panel, not the page."""
    try:
        return fn(), None
    except Exception as exc:
        log.exception("console: the %s panel failed", what)
        return None, f"the {what} panel failed: {type(exc).__name__}: {redact_url(str(exc))[:300]}"


def create_app(settings: Settings) -> Starlette:
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.finalize = finalize
    templates.env.globals["mlflow_version_url"] = lambda model, version: mlflow_version_url(
        settings.tracking_uri, model, version
    )
    templates.env.globals["commit_url"] = lambda sha: commit_url(settings.gitops_url, sha)
    templates.env.globals["plotly_js"] = charts.PLOTLY_JS_PATH
    templates.env.globals["zip"] = zip
    # The data behind the served version, per data.source: generating or reading it takes seconds, so
    # the page loads it once; two sources cover a canary's two versions. Owned by this app, not global.
    sales_for_source = functools.lru_cache(maxsize=2)(load_sales)

    def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        return templates.TemplateResponse(request, name, {"active": name.removesuffix(".html"), **context}, status)

    def bad_input(request: Request, err: InputError, context: dict[str, Any]) -> Response:
        log.info("console: 400 %s %s", request.url.path, err)
        return page(request, "forecast.html", {**context, "input_error": err}, status=400)

    async def index(request: Request) -> Response:
        return RedirectResponse("/releases", status_code=307)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def plotly_js(request: Request) -> Response:
        return Response(
            charts.plotly_js(), media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"}
        )

    def releases_page(request: Request) -> Response:
        releases, fault = guarded("releases", lambda: gather_releases(settings))
        return page(request, "releases.html", {"releases": releases, "fault": fault})

    def live_page(request: Request) -> Response:
        try:
            model = parse_model(request.query_params.get("model"), settings.model_name)
        except InputError as err:
            log.info("console: 400 %s %s", request.url.path, err)
            return PlainTextResponse(f"{err}\n", status_code=400)
        gated, git_fault = guarded("gates", lambda: gather_gates(settings, model))
        names = gated.models if gated else []
        gates = gated.gates if gated else None
        live, fault = guarded("live rollout", lambda: gather_live(settings.metrics_url, model, gates))
        rendered: dict[str, str] = {}
        if live is not None and live.error is None:
            rendered = {c.key: charts.live_chart(c, live.start, live.end) for c in live.charts}
        git_error = git_fault or (gated.error if gated else None)
        return page(
            request,
            "live.html",
            {"model": model, "models": names, "live": live, "fault": fault, "charts": rendered, "git_error": git_error},
        )

    def forecast_page(request: Request) -> Response:
        params = request.query_params
        today = datetime.now(UTC).date()
        form = {
            "model": params.get("model") or settings.model_name,
            "store": params.get("store", ""),
            "start": params.get("start") or today.isoformat(),
            "end": params.get("end") or (today + timedelta(days=13)).isoformat(),
            "promo": params.get("promo", ""),
        }
        serve_url = settings.serve_url_for(form["model"])
        context: dict[str, Any] = {"form": form, "max_days": MAX_DAYS, "serve_url": serve_url}
        if "store" not in params:
            return page(request, "forecast.html", context)
        try:
            query = parse_query(params, settings.model_name)
        except InputError as err:
            return bad_input(request, err, context)
        forecast, fault = guarded("forecast", lambda: gather_forecast(settings.serve_url_for(query.model), query))
        answered = forecast if forecast is not None and forecast.error is None else None
        # The actuals follow the version that answered: during a canary, its own training data.
        actuals, actuals_fault = (
            guarded("actual sales", lambda: gather_actuals(settings.tracking_uri, answered, sales_for_source))
            if answered is not None
            else (None, None)
        )
        chart = charts.forecast_chart(answered, actuals) if answered is not None else ""
        why = charts.contributions_chart(answered) if answered is not None else ""
        rows = table_rows(answered, actuals) if answered is not None else []
        status = 400 if forecast is not None and forecast.client_error else 200
        if status == 400:
            log.info("console: 400 %s the endpoint refused: %s", request.url.path, forecast and forecast.error)
        return page(
            request,
            "forecast.html",
            {
                **context,
                "forecast": forecast,
                "fault": fault,
                "chart": chart,
                "why": why,
                "actuals": actuals,
                "actuals_fault": actuals_fault,
                "rows": rows,
            },
            status,
        )

    def health_page(request: Request) -> Response:
        try:
            model = parse_model(request.query_params.get("model"), settings.model_name)
        except InputError as err:
            log.info("console: 400 %s %s", request.url.path, err)
            return PlainTextResponse(f"{err}\n", status_code=400)
        health, fault = guarded("model health", lambda: gather_health(settings.tracking_uri, model))
        chart = charts.realized_chart(health) if health is not None and health.error is None else ""
        return page(request, "health.html", {"model": model, "health": health, "fault": fault, "chart": chart})

    def drift_report(request: Request) -> Response:
        run_id, path = request.query_params.get("run", ""), request.query_params.get("path", "")
        if not run_id.isalnum() or len(run_id) > 64:
            log.info("console: 400 %s run", request.url.path)
            return PlainTextResponse("run: expected an MLflow run id\n", status_code=400)
        try:
            body = report_html(settings.tracking_uri, run_id, path)
        except ValueError as err:
            log.info("console: 400 %s path", request.url.path)
            return PlainTextResponse(f"path: {err}\n", status_code=400)
        except Exception as exc:  # MLflow or S3 down, or no such artifact
            log.info("console: 502 %s %s", request.url.path, type(exc).__name__)
            return PlainTextResponse(f"the report could not be read from MLflow: {type(exc).__name__}\n", 502)
        return HTMLResponse(body)

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route(charts.PLOTLY_JS_PATH, plotly_js),
        # Plain (sync) functions: Starlette runs them in its thread pool, so a slow git call or
        # source does not stall other requests.
        Route("/releases", releases_page),
        Route("/live", live_page),
        Route("/forecast", forecast_page),
        Route("/health", health_page),
        Route("/health/report", drift_report),
    ]
    return Starlette(routes=routes)
