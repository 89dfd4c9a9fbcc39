"""The demo's client traffic against a real HTTP server: failures are told apart by when they came,
so the demo reports the rollout's own failures, not those from before the first release served."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pandas as pd
from http_helpers import Answer, json_server

from pipelines.platform.demo import short
from pipelines.platform.traffic import REVISION_HEADER, BackgroundTraffic, Traffic


def test_failures_are_counted_by_when_they_came() -> None:
    serving = threading.Event()

    def answer() -> Answer:
        if serving.is_set():
            return 200, {REVISION_HEADER: "m-predictor-00001"}, b'{"outputs": []}'
        return 503, {}, b'{"error":"m: no revision is ready yet"}'

    url, server = json_server(answer)
    rows = pd.DataFrame({"Store": [1, 2], "Date": ["2015-06-20", "2015-06-21"]})
    try:
        with (
            Traffic(url, "m", rows, rows_per_request=1) as traffic,
            BackgroundTraffic(traffic, batch=10) as bg,
        ):
            deadline = time.monotonic() + 20
            while not bg.failures and time.monotonic() < deadline:
                time.sleep(0.05)
            serving.set()
            time.sleep(0.3)  # a batch sent before the switch may still be answering
            switched = time.time()
            while not bg.seen(since=switched) and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        server.shutdown()
    before = bg.failed(until=switched)
    assert set(before) == {'HTTP 503 {"error":"m: no revision is ready yet"}'}, before
    assert not bg.failed(since=switched)
    assert bg.failed() == bg.failures
    assert bg.seen(since=switched)["m-predictor-00001"] > 0
    assert short(before) == f"{before.total()} x HTTP 503 (m: no revision is ready yet)"


def test_short_names_each_kind_of_failure_most_frequent_first() -> None:
    failures = Counter({"ConnectError [Errno 111] Connection refused": 2, 'HTTP 404 {"error":"model \'m\' is not': 5})
    assert short(failures) == "5 x HTTP 404 (model 'm' is not); 2 x ConnectError [Errno 111] Connection refused"
