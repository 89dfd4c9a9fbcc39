"""Join each request with its response by ce-id, and remember what was stored to drop duplicates.

Pure bookkeeping, no I/O, used from the event loop only. A half waits in a bounded pending map
until its partner arrives; past `pair_timeout` (or when more than `max_pending` halves wait) it is
stored alone: a request with a null prediction, or a response without inputs. The key of an event
is (model, ce-id, type), so a request and its response are not duplicates of each other, nor are
two models' events that happen to share a client-chosen ce-id; a key stays known from acceptance
until `dedup_window` after its record was committed to the spool.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from serving.inference_log.events import LogEvent
from serving.inference_log.v2 import RequestPayload, ResponsePayload

Key = tuple[str, str, str]


@dataclass(frozen=True)
class Record:
    """One inference: a request and its response, or one half whose partner did not come in time."""

    request: LogEvent | None
    response: LogEvent | None

    @property
    def first(self) -> LogEvent:
        half = self.request or self.response
        assert half is not None
        return half

    @property
    def rows(self) -> int:
        if self.request is not None:
            assert isinstance(self.request.payload, RequestPayload)
            return self.request.payload.rows
        assert self.response is not None and isinstance(self.response.payload, ResponsePayload)
        return self.response.payload.rows

    @property
    def keys(self) -> list[Key]:
        return [half.key for half in (self.request, self.response) if half is not None]


def _record(a: LogEvent, b: LogEvent | None = None) -> Record:
    halves = [h for h in (a, b) if h is not None]
    request = next((h for h in halves if h.kind == "request"), None)
    response = next((h for h in halves if h.kind == "response"), None)
    return Record(request=request, response=response)


class Pairer:
    def __init__(self, pair_timeout: float, dedup_window: float, dedup_max: int, max_pending: int):
        self.pair_timeout = pair_timeout
        self.dedup_window = dedup_window
        self.dedup_max = dedup_max
        self.max_pending = max_pending
        self._pending: dict[tuple[str, str], LogEvent] = {}  # (model, ce-id) -> first half, oldest first
        self._open: set[Key] = set()  # accepted, not yet committed to the spool
        self._settled: OrderedDict[Key, float] = OrderedDict()  # committed -> forget after (epoch s)

    def is_duplicate(self, key: Key) -> bool:
        return key in self._open or key in self._settled

    def add(self, event: LogEvent) -> Record | None:
        """Accept an event that is not a duplicate; returns a record when this completes one."""
        self._open.add(event.key)
        partner = self._pending.pop(event.pair_id, None)
        if partner is not None:
            return _record(partner, event)
        other = "response" if event.kind == "request" else "request"
        if self.is_duplicate((event.model, event.ce_id, other)):
            # The partner was already stored alone (it timed out): do not wait for it again. The
            # reader merges the two halves by ce-id.
            return _record(event)
        self._pending[event.pair_id] = event
        return None

    def expire(self, now: float, everything: bool = False) -> list[Record]:
        """Halves that waited `pair_timeout` (or overflow `max_pending`, or all) as lone records."""
        out: list[Record] = []
        limit = now - self.pair_timeout
        for pair_id, half in list(self._pending.items()):  # insertion order: oldest first
            overflow = len(self._pending) > self.max_pending
            if not (everything or overflow or half.received_at_us / 1e6 <= limit):
                break
            del self._pending[pair_id]
            out.append(_record(half))
        return out

    def due(self, now: float, everything: bool = False) -> bool:
        """Whether `expire` would return anything."""
        if not self._pending:
            return False
        oldest = next(iter(self._pending.values()))
        return (
            everything
            or len(self._pending) > self.max_pending
            or oldest.received_at_us / 1e6 <= now - self.pair_timeout
        )

    def pending(self) -> list[LogEvent]:
        return list(self._pending.values())

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def settle(self, keys: Iterable[Key], now: float) -> None:
        """These keys' records are committed: remember them for `dedup_window` seconds."""
        keys = list(keys)
        self.remember(keys, now + self.dedup_window)
        for key in keys:
            self._open.discard(key)
        self.prune(now)

    def remember(self, keys: Iterable[Key], until: float) -> None:
        for key in keys:
            self._settled[key] = until
            self._settled.move_to_end(key)

    def prune(self, now: float) -> None:
        while self._settled:
            key, until = next(iter(self._settled.items()))
            if until > now and len(self._settled) <= self.dedup_max:
                break
            del self._settled[key]

    @property
    def remembered(self) -> int:
        return len(self._settled)
