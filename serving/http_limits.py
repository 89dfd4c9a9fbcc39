"""What one HTTP client may hold: body size, header size, and header/body/idle time.

Checked against the installed uvicorn 0.54 / Starlette 1.x / FastAPI 0.165:
- Body size and time: `BodyLimitsMiddleware` answers 413 at the application's first read when the
  declared Content-Length is too large (nothing of the body is read), and as soon as a chunked body
  passes the limit; nothing beyond uvicorn's 64 KiB read buffer is held. It answers 408 (and closes)
  when the body is not complete `body_timeout` seconds after the first read. Neither uvicorn nor
  Starlette has a body timeout; Starlette 1.x has a body limit (RequestBodyLimitMiddleware, FastAPI's
  `max_body_size`), but its 413 is plain text sent in place of whatever the application answers, so
  the V2 `{"error"}` shape would be lost: the count sits in the same receive wrapper as the deadline.
- Idle time: uvicorn's `timeout_keep_alive`, which it arms only after a response. A connection that
  never sends a first request is covered by the header timer below.
- Header time and size: uvicorn has neither. A client sending its request line and headers one byte a
  minute holds the connection for ever, and httptools accepts headers of any length.
  `HeaderLimitProtocol` is uvicorn's httptools protocol with one timer and one byte count: 408 when
  the headers are not complete in time, 431 when they are too long, then the connection is closed.
- Rows per request: `DEFAULT_MAX_ROWS` unless `--max-rows` says otherwise; checked when the body is
  decoded (serving.decode), a 400 naming the limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_MAX_ROWS = 10_000

log = logging.getLogger(__name__)

# Each limit can be set by flag (`python -m serving --max-body-bytes ...`) or by these env vars.
LIMIT_ENV = {
    "max_body_bytes": "SLUICE_MAX_BODY_BYTES",
    "header_timeout": "SLUICE_HEADER_TIMEOUT",
    "body_timeout": "SLUICE_BODY_TIMEOUT",
    "idle_timeout": "SLUICE_IDLE_TIMEOUT",
}
# 10,000 rows (the default row limit) of the Rossmann request are ~1 MB of JSON; 8 MiB leaves room
# for pretty-printed [n, 1]-shaped bodies while a 50 MB body is refused before it is read.
DEFAULT_MAX_BODY_BYTES = 8 * 2**20


@dataclass(frozen=True)
class HttpLimits:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_header_bytes: int = 64 * 2**10
    header_timeout: float = 10.0  # connection open or first byte of a request -> end of its headers
    body_timeout: float = 30.0  # first read of a request body -> its last byte
    # Idle keep-alive between requests. Longer than the idle timeout of the proxy in front (Knative's
    # queue-proxy, Envoy), so the proxy, not the server, closes idle connections: no race on reuse.
    idle_timeout: int = 65

    def __post_init__(self) -> None:
        if self.max_body_bytes <= 0 or self.max_header_bytes <= 0:
            raise ValueError("body and header limits must be positive")
        if min(self.header_timeout, self.body_timeout, self.idle_timeout) <= 0:
            raise ValueError("timeouts must be positive")


def limits_from_env(env: Mapping[str, str]) -> HttpLimits:
    defaults = HttpLimits()
    values = {}
    for name, var in LIMIT_ENV.items():
        kind = type(getattr(defaults, name))
        try:
            values[name] = kind(env[var]) if env.get(var) else getattr(defaults, name)
        except ValueError:
            raise ValueError(f"{var}={env[var]!r}: expected a {kind.__name__}") from None
    return HttpLimits(**values)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        # The connection stays open: uvicorn discards the rest of the body without buffering it.
        super().__init__(413, f"body: larger than this server's limit of {limit} bytes")


class BodyTimeout(HTTPException):
    def __init__(self, seconds: float):
        # Close: the rest of a body that is late may still arrive, and must not be read as a request.
        super().__init__(408, f"body: not received within {seconds:g} s", headers={"connection": "close"})


class BodyLimitsMiddleware:
    """413 past `max_bytes`, 408 when the body is not complete `seconds` after the application's first
    read. Raised from the application's read as HTTPExceptions, so the error handlers answer them."""

    def __init__(self, app: ASGIApp, max_bytes: int, seconds: float):
        self.app = app
        self.max_bytes = max_bytes
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        declared = _content_length(scope)
        deadline: float | None = None
        received, body_done = 0, False

        async def limited_receive() -> Message:
            nonlocal deadline, received, body_done
            if body_done:  # later reads wait for a disconnect: no deadline, no count
                return await receive()
            if declared is not None and declared > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            if deadline is None:
                deadline = loop.time() + self.seconds
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(self.seconds) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value)  # uvicorn refuses a request whose Content-Length is not a number
    return None


class HeaderLimitProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit on each request's headers.

    The deadline runs from the connection's opening (first request) or the request's first byte (later
    requests; between requests uvicorn's keep-alive timer applies) to the end of its headers. Once a
    request is refused, the parser callbacks for the rest of the bytes already read are ignored: no
    application call starts on a connection that is closing.
    """

    limits: HttpLimits = HttpLimits()  # set per server by protocol_for()
    _header_timer: asyncio.TimerHandle | None = None
    _header_bytes = 0
    _in_headers = False
    _refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        self._in_headers, self._header_bytes = True, 0
        if self._header_timer is None:  # a new connection's timer keeps running: no reset at byte one
            self._arm()

    def on_url(self, url: bytes) -> None:
        if self._within_size(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._within_size(len(name) + len(value)):
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._disarm()
        self._in_headers = False
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.limits.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _within_size(self, n: int) -> bool:
        if self._refused:
            return False
        self._header_bytes += n
        if self._header_bytes > self.limits.max_header_bytes:
            self._refuse(431, f"headers: longer than {self.limits.max_header_bytes} bytes")
            return False
        return True

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._refused or self.transport.is_closing():
            return
        if not self._in_headers:  # nothing sent since the connection opened: close without a word
            self._refused = True
            self.transport.close()
            return
        self._refuse(408, f"headers: not received within {self.limits.header_timeout:g} s")

    def _refuse(self, status: int, error: str) -> None:
        self._refused = True
        self._disarm()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "client"
        log.warning("rejected %s: %d %s", client, status, error)
        body = json.dumps({"error": error}).encode()
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        self.transport.write(head % (status, reason, len(body)) + body)
        self.transport.close()


def protocol_for(limits: HttpLimits) -> type[HeaderLimitProtocol]:
    """uvicorn takes a protocol class (Config.http) and builds it with its own arguments: the limits
    travel as a class attribute of a subclass made for this server."""
    return type("HeaderLimitProtocol", (HeaderLimitProtocol,), {"limits": limits})
