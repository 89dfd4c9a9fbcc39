"""The inference-log receiver end to end: a real process, real LocalStack S3, events as KServe sends them.

Events are built with the cloudevents SDK in binary mode (what KServe's agent sends) and POSTed over
HTTP; what lands in S3 is read back with boto3 and pyarrow. Each test logs a model name of its own,
so tests sharing the platform's data bucket never see each other's objects. Timers are short (0.3 s
flush interval, 1 s pair timeout). Cost: about 10 s on the shared platform, plus one LocalStack
stop and restart (~30 s) for the outage test on a platform of its own.
"""

from __future__ import annotations

import re
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from inference_log_helpers import (
    INT_COLUMNS,
    NAMESPACE,
    Receiver,
    event,
    predictions,
    receiver_env,
    request_body,
    response_body,
    rows,
    run_receiver,
    wait_for,
)

from pipelines.config import Settings
from pipelines.platform import s3_mirror, up
from pipelines.platform.processes import stop_service
from pipelines.registry import s3_client
from serving.inference_log.layout import FIXED_COLUMNS
from serving.inference_log.reader import read_log

pytestmark = pytest.mark.integration
PREFIX = "inference-log/"
COLUMNS = ("Store", "DayOfWeek", "Date", "Open", "Promo", "StateHoliday", "SchoolHoliday")
KEY = re.compile(
    r"inference-log/model=(?P<model>[^/]+)/version=(?P<version>[^/]+)/date=(?P<date>\d{4}-\d{2}-\d{2})/"
    r"part-\d{8}T\d{6}\d*Z-[0-9a-f]{32}\.parquet"
)


def new_model() -> str:
    return f"rossmann-{uuid.uuid4().hex[:8]}"


def objects(settings: Settings, model: str) -> list[str]:
    s3 = s3_client(settings)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=settings.data_bucket, Prefix=f"{PREFIX}model={model}/")
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def stored(settings: Settings, model: str) -> list[tuple[str, pa.Table]]:
    s3 = s3_client(settings)
    out = []
    for key in objects(settings, model):
        body = s3.get_object(Bucket=settings.data_bucket, Key=key)["Body"].read()
        out.append((key, pq.read_table(pa.BufferReader(body))))
    return out


def stored_rows(settings: Settings, model: str) -> list[dict[str, Any]]:
    return [r for _, t in stored(settings, model) for r in t.to_pylist()]


def row_ids(settings: Settings, model: str) -> list[tuple[str, int]]:
    return sorted((r["ce_id"], r["row"]) for r in stored_rows(settings, model))


def send_pair(receiver: Receiver, model: str, ce_id: str, n: int = 5, seed: int = 0) -> None:
    data = rows(n, seed)
    for kind, body in (("request", request_body(data)), ("response", response_body(data))):
        got = receiver.send(event(kind, ce_id, body, model=model))  # type: ignore[arg-type]
        assert got.status_code == 200, got.text


def expected_ids(ce_ids: list[str], n: int = 5) -> list[tuple[str, int]]:
    return sorted((c, i) for c in ce_ids for i in range(n))


@pytest.fixture(scope="module")
def receiver(platform: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """One receiver for the tests that do not stop it (each logs a model of its own)."""
    home = tmp_path_factory.mktemp("receiver")
    env = receiver_env(platform.aws_env(), platform.data_bucket, home / "spool", max_body_bytes="100000")
    with run_receiver(env, home / "receiver.log") as r:
        yield r
        assert r.stop() == 0, r.logs()
        assert "Traceback" not in r.logs()


def counts(receiver: Receiver) -> dict[tuple[str, str], float]:
    """The events counter by (type, outcome): tests sharing a receiver compare before and after."""
    return {
        (t, o): receiver.metric("sluice_inference_log_events_total", type=t, outcome=o)
        for t in ("request", "response", "unknown")
        for o in ("accepted", "duplicate", "invalid")
    }


def delta(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def test_events_become_parquet_rows_in_s3(platform: Settings, receiver: Receiver) -> None:
    model = new_model()
    a, b, c = rows(5, 1), rows(5, 2), rows(3, 3)
    before = counts(receiver)
    unpaired = receiver.metric("sluice_inference_log_unpaired_total", type="request")
    sent = [
        ("request", "a", request_body(a, request_id="client-a"), "rossmann-predictor-00003"),
        ("response", "a", response_body(a, version="3"), "rossmann-predictor-00003"),
        # b: the response overtakes its request (the agent's workers run concurrently)
        ("response", "b", response_body(b, version="3"), "rossmann-predictor-00003"),
        ("request", "b", request_body(b), "rossmann-predictor-00003"),
        # c: the model answered with an error, so KServe logs no response
        ("request", "c", request_body(c), "rossmann-predictor-00004"),
    ]
    for kind, ce_id, body, revision in sent:
        got = receiver.send(event(kind, ce_id, body, model=model, revision=revision))  # type: ignore[arg-type]
        assert (got.status_code, got.json()) == (200, {"status": "accepted"}), got.text
    again = receiver.send(event("response", "a", response_body(a, version="3"), model=model))
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})

    wait_for(lambda: len(row_ids(platform, model)) == 13, timeout=20, what="13 rows in S3")
    assert receiver.metric("sluice_inference_log_rows_written_total", model=model) == 13
    assert delta(before, counts(receiver)) == {
        ("request", "accepted"): 3,
        ("response", "accepted"): 2,
        ("response", "duplicate"): 1,
    }
    assert receiver.metric("sluice_inference_log_unpaired_total", type="request") == unpaired + 1

    files = stored(platform, model)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    partitions = sorted({KEY.fullmatch(key).group("model", "version", "date") for key, _ in files})  # type: ignore[union-attr]
    assert partitions == [(model, "3", today), (model, "__HIVE_DEFAULT_PARTITION__", today)], [k for k, _ in files]
    expected_schema = pa.schema(
        [
            *FIXED_COLUMNS,
            *[(c, pa.int64() if c in INT_COLUMNS else pa.string()) for c in COLUMNS],
            ("prediction", pa.float64()),
        ]
    )
    for key, table in files:
        assert table.schema.equals(expected_schema), f"{key}: {table.schema}"

    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(stored_rows(platform, model), key=lambda r: (r["ce_id"], r["row"])):
        by_id.setdefault(r["ce_id"], []).append(r)
    for ce_id, data, version, preds in (
        ("a", a, "3", predictions(a)),
        ("b", b, "3", predictions(b)),
        ("c", c, "", None),
    ):
        got = by_id[ce_id]
        assert [r["row"] for r in got] == list(range(len(data)))
        assert [{k: r[k] for k in COLUMNS} for r in got] == data
        assert [r["prediction"] for r in got] == (preds or [None] * len(data))
        assert {(r["model"], r["version"], r["namespace"], r["endpoint"]) for r in got} == {
            (model, version, NAMESPACE, "default")
        }
    assert {r["revision"] for r in by_id["c"]} == {"rossmann-predictor-00004"}
    assert {r["request_id"] for r in by_id["a"]} == {"client-a"} and {r["request_id"] for r in by_id["b"]} == {""}
    received = [r["received_at"] for rs in by_id.values() for r in rs]
    assert all(abs(t - datetime.now(UTC)) < timedelta(minutes=5) for t in received)


def test_read_log_returns_the_logged_rows_as_a_dataframe(platform: Settings, receiver: Receiver) -> None:
    model = new_model()
    a, b = rows(5, 4), rows(2, 5)
    before = datetime.now(UTC)
    send_pair(receiver, model, "a", seed=4)
    for kind, body in (("request", request_body(b)), ("response", response_body(b, version="4"))):
        receiver.send(event(kind, "b", body, model=model))  # type: ignore[arg-type]
    # A response stored apart from its request (it came after the pair timeout): read_log joins them.
    late = rows(2, 6)
    receiver.send(event("request", "late", request_body(late), model=model))
    wait_for(lambda: len(row_ids(platform, model)) == 9, timeout=20, what="the first 9 rows")
    receiver.send(event("response", "late", response_body(late, version="3"), model=model))
    wait_for(lambda: len(row_ids(platform, model)) == 11, timeout=20, what="the late response")
    after = datetime.now(UTC)

    s3 = s3_client(platform)
    frame = read_log(s3, platform.data_bucket, model)
    assert list(frame.columns) == [n for n, _ in FIXED_COLUMNS] + list(COLUMNS) + ["prediction"]
    assert len(frame) == 9
    assert frame["received_at"].dtype == "datetime64[us, UTC]" and frame["row"].dtype == "int32"
    assert all(frame[c].dtype == "int64" for c in INT_COLUMNS) and frame["prediction"].dtype == "float64"
    late_rows = frame[frame["ce_id"] == "late"]
    assert late_rows["prediction"].tolist() == predictions(late) and set(late_rows["version"]) == {"3"}
    assert late_rows[list(COLUMNS)].to_dict("records") == late

    v3 = read_log(s3, platform.data_bucket, model, version="3")
    assert sorted(set(v3["ce_id"])) == ["a", "late"] and len(v3) == 7
    pd.testing.assert_frame_equal(
        v3[v3["ce_id"] == "a"][list(COLUMNS)].reset_index(drop=True), pd.DataFrame(a)[list(COLUMNS)]
    )
    assert read_log(s3, platform.data_bucket, model, version="4")["row"].tolist() == [0, 1]
    assert len(read_log(s3, platform.data_bucket, model, since=before, until=after)) == 9
    assert read_log(s3, platform.data_bucket, model, until=before).empty
    assert read_log(s3, platform.data_bucket, "no-such-model").empty


def test_malformed_events_get_a_4xx_naming_the_fault_and_are_counted(receiver: Receiver) -> None:
    model = new_model()
    good_headers, good_body = event("request", "x", request_body(rows(1)), model=model)
    cases = [
        ({k: v for k, v in good_headers.items() if k != "ce-id"}, good_body, 400, "ce-id: missing header"),
        ({**good_headers, "ce-type": "org.kubeflow.serving.inference.other"}, good_body, 400, "ce-type: unknown type"),
        (good_headers, b"<html>", 400, "body: not JSON"),
        (good_headers, b'{"inputs": [{"name": "Store"}]}', 400, "body.inputs[0] (Store).datatype"),
        ({**good_headers, "ce-inferenceservicename": "Not/A/Name"}, good_body, 400, "ce-inferenceservicename"),
        (good_headers, b"{" + b" " * 200_000 + b"}", 413, "body: larger than 100000 bytes"),
    ]
    before, log_before = counts(receiver), receiver.log.read_text()
    for headers, body, status, message in cases:
        got = receiver.send((headers, body))
        assert got.status_code == status, got.text
        assert got.json()["error"].startswith(message), got.json()
    assert receiver.send((good_headers, good_body)).status_code == 200  # still serving
    assert delta(before, counts(receiver)) == {
        ("request", "invalid"): 5,
        ("unknown", "invalid"): 1,
        ("request", "accepted"): 1,
    }
    new_lines = receiver.log.read_text()[len(log_before) :]
    assert len(re.findall(r"event rejected \(4\d\d\)", new_lines)) == 6, new_lines  # one line per client error
    assert "Traceback" not in new_lines


def test_sigterm_stores_everything_acknowledged(platform: Settings, tmp_path: Path) -> None:
    model = new_model()
    # No timed flush and a long pair timeout: only the SIGTERM path can store these.
    env = receiver_env(
        platform.aws_env(), platform.data_bucket, tmp_path / "spool", flush_interval="3600", pair_timeout="3600"
    )
    with run_receiver(env, tmp_path / "receiver.log") as receiver:
        for i in range(20):
            send_pair(receiver, model, f"p{i}", seed=i)
        receiver.send(event("request", "alone", request_body(rows(5)), model=model))
        assert objects(platform, model) == []
        assert receiver.stop(signal.SIGTERM) == 0, receiver.logs()
    assert row_ids(platform, model) == expected_ids([f"p{i}" for i in range(20)] + ["alone"])
    assert not list((tmp_path / "spool" / "outbox").rglob("*.parquet"))
    assert not list((tmp_path / "spool" / "wal").glob("*.wal")) or all(
        p.stat().st_size == 0 for p in (tmp_path / "spool" / "wal").glob("*.wal")
    )


def test_sigkill_loses_nothing_acknowledged_and_a_resend_is_stored_once(platform: Settings, tmp_path: Path) -> None:
    model = new_model()
    spool = tmp_path / "spool"
    # fsync=1: every acknowledgement waits for an fsync of the write-ahead log (group commit).
    env = receiver_env(
        platform.aws_env(), platform.data_bucket, spool, flush_interval="3600", pair_timeout="3600", fsync="1"
    )
    with run_receiver(env, tmp_path / "receiver.log") as receiver:
        for i in range(10):
            send_pair(receiver, model, f"k{i}", seed=i)
        receiver.send(event("request", "half", request_body(rows(5)), model=model))
        receiver.stop(signal.SIGKILL)
    assert objects(platform, model) == []
    env = receiver_env(platform.aws_env(), platform.data_bucket, spool)
    with run_receiver(env, tmp_path / "receiver.log") as receiver:
        # The WAL is replayed: the pairs are stored, and "half" still finds its response.
        half_response = receiver.send(event("response", "half", response_body(rows(5)), model=model))
        assert half_response.json() == {"status": "accepted"}
        wait_for(lambda: len(row_ids(platform, model)) == 55, timeout=20, what="55 rows after the restart")
        assert receiver.send(event("response", "k3", response_body(rows(5, 3)), model=model)).json() == {
            "status": "duplicate"
        }
        assert receiver.stop() == 0, receiver.logs()
    assert row_ids(platform, model) == expected_ids([f"k{i}" for i in range(10)] + ["half"])
    half = [r for r in stored_rows(platform, model) if r["ce_id"] == "half"]
    assert [r["prediction"] for r in sorted(half, key=lambda r: r["row"])] == predictions(rows(5))


@pytest.mark.slow
def test_an_s3_outage_loses_nothing_across_a_restart(own_platform: Settings, tmp_path: Path) -> None:
    s = own_platform
    model = new_model()
    spool = tmp_path / "spool"
    env = receiver_env(s.aws_env(), s.data_bucket, spool)
    log = tmp_path / "receiver.log"
    s3_down = False
    try:
        with run_receiver(env, log) as receiver:
            for i in range(5):
                send_pair(receiver, model, f"a{i}", seed=i)
            wait_for(lambda: len(row_ids(s, model)) == 25, timeout=20, what="batch a in S3")
            time.sleep(s3_mirror.INTERVAL * 2 + 1)  # the platform's own promise: S3 objects mirrored to disk
            stop_service(s, "localstack")
            s3_down = True
            for i in range(5):
                send_pair(receiver, model, f"b{i}", seed=10 + i)  # acknowledged while S3 is down
            wait_for(lambda: receiver.metric("sluice_inference_log_upload_failures_total") > 0, 20, "a failed upload")
            assert receiver.stop() == 0, receiver.logs()  # the drain gives up; the files stay in the spool
        assert list((spool / "outbox").rglob("*.parquet"))
        with run_receiver(env, log) as second:  # a new process on the same spool, S3 still down
            for i in range(5):
                send_pair(second, model, f"c{i}", seed=20 + i)
            resent = second.send(event("response", "b2", response_body(rows(5, 12)), model=model))
            assert resent.json() == {"status": "duplicate"}
            wait_for(lambda: second.metric("sluice_inference_log_upload_failures_total") > 0, 20, "a failure")
            up.platform_up(s, echo=lambda _: None)  # LocalStack back (the mirror restores batch a)
            s3_down = False
            wait_for(lambda: second.metric("sluice_inference_log_spool_files") == 0, 30, "the spool uploaded")
            assert second.stop() == 0, second.logs()
    finally:
        if s3_down:
            up.platform_up(s, echo=lambda _: None)
    assert row_ids(s, model) == expected_ids([f"{x}{i}" for x in "abc" for i in range(5)])
