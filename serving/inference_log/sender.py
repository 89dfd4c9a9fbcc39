"""Build a payload-logger event exactly as KServe's agent does, for senders other than KServe.

KServe's agent (pkg/logger/worker.go) builds a CloudEvent 1.0 with id, type, source, time, the
extensions recordedtime, inferenceservicename, namespace, component, endpoint and metadata (a JSON
object of forwarded headers, `{}` by default) and the V2 body as data, and sends it in binary mode.
Sluice's local stand-in sends the same events (plus `revision`), so the receiver sees one format.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from serving.inference_log.events import REQUEST_TYPE, RESPONSE_TYPE


def logger_event(
    kind: Literal["request", "response"],
    ce_id: str,
    body: bytes,
    *,
    model: str,
    namespace: str = "",
    component: str = "predictor",
    endpoint: str = "",
    source: str = "http://localhost:9081/",
    revision: str = "",
    content_type: str = "application/json",
    occurred: datetime | None = None,
) -> tuple[dict[str, str], bytes]:
    """(headers, body) of the binary-mode CloudEvent for one request or response."""
    now = datetime.now(UTC)
    attributes = {
        "specversion": "1.0",
        "id": ce_id,
        "type": REQUEST_TYPE if kind == "request" else RESPONSE_TYPE,
        "source": source,
        "time": (occurred or now).isoformat(),
        "datacontenttype": content_type,
        "recordedtime": now.isoformat(),
        "inferenceservicename": model,
        "namespace": namespace,
        "component": component,
        "endpoint": endpoint,
        "metadata": "{}",
    }
    if revision:
        attributes["revision"] = revision
    headers, data = to_binary(CloudEvent(attributes, body))
    return dict(headers), data
