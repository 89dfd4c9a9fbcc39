"""KServe payload-logger CloudEvents: parse and check one HTTP delivery into a LogEvent.

KServe's agent (pkg/logger/worker.go) sends each inference request and each 200 response as a
binary-mode CloudEvent 1.0: headers `ce-specversion`, `ce-id` (shared by the request and its
response), `ce-type` (REQUEST_TYPE or RESPONSE_TYPE), `ce-source` (the pod name), `ce-time`, and the
extensions `ce-inferenceservicename`, `ce-namespace`, `ce-component`, `ce-endpoint`, `ce-metadata`,
`ce-recordedtime`; the body is the raw V2 payload. Sluice's local stand-in adds `ce-revision` (the
Knative revision). Structured mode (`application/cloudevents+json`) is accepted as well.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cloudevents.exceptions import GenericException
from cloudevents.http import from_http

from serving.inference_log.v2 import PayloadError, RequestPayload, ResponsePayload, decode_request, decode_response

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
KIND_OF_TYPE: dict[str, Literal["request", "response"]] = {REQUEST_TYPE: "request", RESPONSE_TYPE: "response"}
_REQUIRED = ("ce-specversion", "ce-id", "ce-type", "ce-source")
# Model names become S3 key segments: Kubernetes object names (DNS-1123 subdomain) only.
_MODEL_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
# KServe's agent sets ce-source to the pod name; a Knative pod is `<revision>-deployment-<rs>-<pod>`.
_KNATIVE_POD = re.compile(r"^(?P<revision>.+-\d{5})-deployment-[a-z0-9]+-[a-z0-9]+$")
MAX_ID_LENGTH = 256


class EventError(ValueError):
    """Not a payload-logger event; the message starts with the header or body field at fault."""


@dataclass(frozen=True)
class LogEvent:
    ce_id: str
    kind: Literal["request", "response"]
    model: str
    namespace: str
    endpoint: str
    component: str
    revision: str
    source: str
    received_at_us: int  # receiver clock, microseconds since the epoch (UTC)
    body: bytes
    payload: RequestPayload | ResponsePayload

    @property
    def pair_id(self) -> tuple[str, str]:
        """What a request shares with its response: the model and the ce-id."""
        return (self.model, self.ce_id)

    @property
    def key(self) -> tuple[str, str, str]:
        """What makes an event a duplicate of another: the same model, ce-id and type."""
        return (self.model, self.ce_id, self.kind)


def event_kind(headers: Mapping[str, str]) -> str:
    """request, response or unknown, from the raw headers (for counting events that fail to parse)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return KIND_OF_TYPE.get(lowered.get("ce-type", ""), "unknown")


def parse_event(headers: Mapping[str, str], body: bytes, received_at_us: int) -> LogEvent:
    lowered = {k.lower(): v for k, v in headers.items()}
    structured = lowered.get("content-type", "").startswith("application/cloudevents+json")
    if not structured:
        for name in _REQUIRED:
            if not lowered.get(name, "").strip():
                raise EventError(f"{name}: missing header; expected a binary-mode CloudEvent 1.0")
        if lowered["ce-specversion"] != "1.0":
            raise EventError(f"ce-specversion: {lowered['ce-specversion']!r}; expected '1.0'")
    try:
        event = from_http(lowered, body, data_unmarshaller=lambda raw: raw)
    except GenericException as e:
        raise EventError(f"cloudevent: {e}") from None
    attrs = event.get_attributes()
    ce_id, ce_type = str(attrs.get("id", "")), str(attrs.get("type", ""))
    if not ce_id:
        raise EventError("ce-id: empty")
    if len(ce_id) > MAX_ID_LENGTH:
        raise EventError(f"ce-id: {len(ce_id)} characters; at most {MAX_ID_LENGTH}")
    kind = KIND_OF_TYPE.get(ce_type)
    if kind is None:
        raise EventError(f"ce-type: unknown type {ce_type!r}; expected {REQUEST_TYPE} or {RESPONSE_TYPE}")
    model = str(attrs.get("inferenceservicename", ""))
    if not model:
        raise EventError("ce-inferenceservicename: missing; expected the InferenceService's name")
    if not _MODEL_NAME.fullmatch(model):
        raise EventError(f"ce-inferenceservicename: {model!r} is not a Kubernetes object name")
    return make_event(
        ce_id=ce_id,
        kind=kind,
        model=model,
        namespace=str(attrs.get("namespace", "")),
        endpoint=str(attrs.get("endpoint", "")),
        component=str(attrs.get("component", "")),
        revision=str(attrs.get("revision", "")) or revision_from_source(str(attrs.get("source", ""))),
        source=str(attrs.get("source", "")),
        received_at_us=received_at_us,
        body=_data_bytes(event.get_data()),
    )


def make_event(
    *,
    ce_id: str,
    kind: Literal["request", "response"],
    model: str,
    namespace: str,
    endpoint: str,
    component: str,
    revision: str,
    source: str,
    received_at_us: int,
    body: bytes,
) -> LogEvent:
    """A LogEvent with its body decoded (also how the write-ahead log's records are read back)."""
    try:
        payload: RequestPayload | ResponsePayload = decode_request(body) if kind == "request" else decode_response(body)
    except PayloadError as e:
        raise EventError(str(e)) from None
    return LogEvent(
        ce_id=ce_id,
        kind=kind,
        model=model,
        namespace=namespace,
        endpoint=endpoint,
        component=component,
        revision=revision,
        source=source,
        received_at_us=received_at_us,
        body=body,
        payload=payload,
    )


def _data_bytes(data: Any) -> bytes:
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, str):
        return data.encode()
    if data is None:
        return b""
    return json.dumps(data).encode()  # structured mode: the envelope's `data` is already JSON


def revision_from_source(source: str) -> str:
    """The Knative revision in KServe's ce-source (the pod name), or "" when it is not a Knative pod."""
    pod = source.rstrip("/").rsplit("/", 1)[-1]
    match = _KNATIVE_POD.match(pod)
    return match.group("revision") if match else ""
