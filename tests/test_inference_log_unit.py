"""The inference-log receiver's parts without a server: events, V2 bodies, pairing, WAL, Parquet, spool.

The end-to-end behaviour (a real receiver process, LocalStack S3) is in test_inference_log.py.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from inference_log_helpers import MODEL, NAMESPACE, event, predictions, request_body, response_body, rows

from serving.inference_log.config import ConfigError, LogConfig, load_config
from serving.inference_log.events import EventError, LogEvent, parse_event, revision_from_source
from serving.inference_log.layout import FIXED_COLUMNS, parse_key, tables
from serving.inference_log.pairing import Pairer
from serving.inference_log.spool import Spool
from serving.inference_log.v2 import PayloadError, decode_request, decode_response
from serving.inference_log.wal import WriteAheadLog

NOW_US = 1_780_000_000_000_000  # 2026-05-28T20:26:40Z


def parsed(kind: str, ce_id: str, body: bytes, at_us: int = NOW_US, **kw: Any) -> LogEvent:
    headers, data = event(kind, ce_id, body, **kw)  # type: ignore[arg-type]
    return parse_event(headers, data, at_us)


def pair(ce_id: str, data: list[dict[str, Any]], at_us: int = NOW_US, version: str = "3") -> tuple[LogEvent, LogEvent]:
    return (
        parsed("request", ce_id, request_body(data, request_id=f"req-{ce_id}"), at_us),
        parsed("response", ce_id, response_body(data, version=version), at_us + 5000),
    )


# --- the events KServe's agent sends ---------------------------------------------------------------


def test_sender_builds_the_headers_kserves_agent_sends() -> None:
    headers, body = event("request", "id-1", request_body(rows(2)), revision="")
    assert set(headers) == {
        "content-type",
        "ce-specversion",
        "ce-id",
        "ce-type",
        "ce-source",
        "ce-time",
        "ce-recordedtime",
        "ce-inferenceservicename",
        "ce-namespace",
        "ce-component",
        "ce-endpoint",
        "ce-metadata",
    }
    assert headers["ce-type"] == "org.kubeflow.serving.inference.request"
    assert body == request_body(rows(2))


def test_an_event_is_parsed_into_its_attributes_and_columns() -> None:
    ev = parsed("request", "id-1", request_body(rows(3), request_id="r-9"))
    assert (ev.ce_id, ev.kind, ev.model, ev.namespace, ev.endpoint, ev.component) == (
        "id-1",
        "request",
        MODEL,
        NAMESPACE,
        "default",
        "predictor",
    )
    assert ev.revision == "rossmann-predictor-00003" and ev.received_at_us == NOW_US
    assert ev.payload.rows == 3 and ev.payload.request_id == "r-9"  # type: ignore[union-attr]
    resp = parsed("response", "id-1", response_body(rows(3), version="7"))
    assert resp.payload.version == "7" and resp.payload.predictions == predictions(rows(3))  # type: ignore[union-attr]


def test_the_revision_comes_from_ce_revision_else_from_the_knative_pod_name() -> None:
    ev = parsed(
        "request", "a", request_body(rows(1)), revision="", source="rossmann-predictor-00002-deployment-6c9f-x2x"
    )
    assert ev.revision == "rossmann-predictor-00002"
    assert revision_from_source("http://localhost:9081/") == ""
    assert revision_from_source("rossmann-predictor-00012-deployment-7d5b8c7f4-abcde") == "rossmann-predictor-00012"


def test_structured_mode_is_accepted_too() -> None:
    envelope = {
        "specversion": "1.0",
        "id": "s-1",
        "type": "org.kubeflow.serving.inference.request",
        "source": "x",
        "inferenceservicename": MODEL,
        "data": json.loads(request_body(rows(2))),
    }
    ev = parse_event({"Content-Type": "application/cloudevents+json"}, json.dumps(envelope).encode(), NOW_US)
    assert ev.ce_id == "s-1" and ev.payload.rows == 2  # type: ignore[union-attr]


def _without(header: str) -> tuple[dict[str, str], bytes]:
    headers, body = event("request", "id-1", request_body(rows(1)))
    headers.pop(header)
    return headers, body


def _with(header: str, value: str, body: bytes | None = None) -> tuple[dict[str, str], bytes]:
    headers, good = event("request", "id-1", request_body(rows(1)))
    headers[header] = value
    return headers, good if body is None else body


@pytest.mark.parametrize(
    ("delivery", "message"),
    [
        (_without("ce-id"), "ce-id: missing header"),
        (_without("ce-type"), "ce-type: missing header"),
        (_without("ce-source"), "ce-source: missing header"),
        (_without("ce-specversion"), "ce-specversion: missing header"),
        (_with("ce-specversion", "0.3"), "ce-specversion: '0.3'; expected '1.0'"),
        (_with("ce-type", "com.example.other"), "ce-type: unknown type 'com.example.other'"),
        (_without("ce-inferenceservicename"), "ce-inferenceservicename: missing"),
        (_with("ce-inferenceservicename", "../etc"), "ce-inferenceservicename: '../etc' is not a Kubernetes"),
        (_with("ce-id", "x" * 300), "ce-id: 300 characters"),
        (_with("content-type", "application/json", b"{not json"), "body: not JSON"),
        (_with("content-type", "application/json", b""), "body: empty"),
        (_with("content-type", "application/json", b"[1, 2]"), "body: a JSON list; expected a V2 JSON object"),
        (_with("content-type", "application/json", b'{"id": "x"}'), "body.inputs: missing or empty"),
    ],
)
def test_a_malformed_event_is_an_error_naming_what_is_wrong(
    delivery: tuple[dict[str, str], bytes], message: str
) -> None:
    headers, body = delivery
    with pytest.raises(EventError) as e:
        parse_event(headers, body, NOW_US)
    assert str(e.value).startswith(message), str(e.value)


# --- V2 bodies -------------------------------------------------------------------------------------


def _input(**kw: Any) -> bytes:
    tensor = {"name": "Store", "datatype": "INT64", "shape": [2], "data": [1, 2], **kw}
    return json.dumps({"inputs": [tensor]}).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_input(datatype="INT65"), "body.inputs[0] (Store).datatype: 'INT65'"),
        (_input(shape=[3]), "body.inputs[0] (Store).data: 2 values, but shape [3] needs 3"),
        (_input(shape="2"), "body.inputs[0] (Store).shape: '2'"),
        (_input(data=[1, "2"]), "body.inputs[0] (Store).data[1]: '2' is not a 64-bit integer"),
        (_input(data=[1, 2.5]), "body.inputs[0] (Store).data[1]: 2.5 is not a 64-bit integer"),
        (_input(data=[1, 2**64]), "body.inputs[0] (Store).data[1]"),
        (_input(datatype="BYTES"), "body.inputs[0] (Store).data[0]: 1 is not a string"),
        (_input(datatype="FP32", data=[1, True]), "body.inputs[0] (Store).data[1]: True is not a number"),
        (_input(name=""), "body.inputs[0].name: missing"),
        (
            json.dumps({"inputs": [{"name": "a", "datatype": "INT64", "shape": [1]}]}).encode(),
            "body.inputs[0] (a).data: missing",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {"name": "a", "datatype": "INT64", "shape": [1], "data": [1]},
                        {"name": "a", "datatype": "INT64", "shape": [1], "data": [1]},
                    ]
                }
            ).encode(),
            "body.inputs[1].name: input 'a' given twice",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {"name": "a", "datatype": "INT64", "shape": [1], "data": [1]},
                        {"name": "b", "datatype": "INT64", "shape": [2], "data": [1, 2]},
                    ]
                }
            ).encode(),
            "body.inputs[1] (b).shape: 2 rows, but the first input has 1",
        ),
    ],
)
def test_a_body_that_is_not_a_v2_request_is_an_error_naming_the_field(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError) as e:
        decode_request(body)
    assert str(e.value).startswith(message), str(e.value)


def test_v2_data_may_be_nested_integral_floats_count_as_integers_and_a_matrix_is_a_list_per_row() -> None:
    body = json.dumps(
        {
            "inputs": [
                {"name": "a", "datatype": "INT32", "shape": [2, 1], "data": [[1.0], [2]]},
                {"name": "m", "datatype": "FP64", "shape": [2, 3], "data": [[1, 2, 3], [4, 5, 6]]},
            ]
        }
    ).encode()
    payload = decode_request(body)
    a, m = payload.inputs
    assert payload.rows == 2
    assert (a.kind, a.width, a.values) == ("int64", 1, [1, 2])
    assert (m.kind, m.width, m.values) == ("float64", 3, [1, 2, 3, 4, 5, 6])


def test_the_binary_tensor_extension_is_decoded() -> None:
    floats = struct.pack("<3f", 1.5, 2.5, 3.5)
    header = {
        "model_version": "2",
        "outputs": [{"name": "predictions", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": 12}}],
    }
    resp = decode_response(json.dumps(header).encode() + floats)
    assert resp.predictions == [1.5, 2.5, 3.5] and resp.version == "2"
    texts = b"".join(struct.pack("<I", len(s)) + s for s in (b"a", b"2015-07-31"))
    ints = struct.pack("<2q", 7, 8)
    header = {
        "inputs": [
            {"name": "Store", "datatype": "INT64", "shape": [2], "parameters": {"binary_data_size": 16}},
            {"name": "Date", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(texts)}},
        ]
    }
    req = decode_request(json.dumps(header).encode() + ints + texts)
    assert [t.values for t in req.inputs] == [[7, 8], ["a", "2015-07-31"]]
    with pytest.raises(PayloadError, match="bytes after the JSON that no tensor claims"):
        decode_response(
            json.dumps({"outputs": [{"name": "p", "datatype": "FP32", "shape": [0], "data": []}]}).encode() + b"xx"
        )


def test_the_prediction_is_the_predictions_output_else_the_first() -> None:
    outputs = [
        {"name": "other", "datatype": "FP64", "shape": [2], "data": [9, 9]},
        {"name": "predictions", "datatype": "FP64", "shape": [2], "data": [1, 2]},
    ]
    assert decode_response(json.dumps({"outputs": outputs}).encode()).predictions == [1.0, 2.0]
    assert decode_response(json.dumps({"outputs": outputs[:1]}).encode()).predictions == [9.0, 9.0]
    labels = [{"name": "label", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]
    assert decode_response(json.dumps({"outputs": labels}).encode()).predictions == [None, None]


# --- pairing and duplicates ------------------------------------------------------------------------


def pairer(**kw: Any) -> Pairer:
    return Pairer(**{"pair_timeout": 30.0, "dedup_window": 600.0, "dedup_max": 1000, "max_pending": 1000, **kw})


def test_request_and_response_pair_in_either_order() -> None:
    p = pairer()
    req, resp = pair("a", rows(2))
    assert p.add(req) is None
    record = p.add(resp)
    assert record is not None and record.request is req and record.response is resp
    req2, resp2 = pair("b", rows(2))
    assert p.add(resp2) is None
    record = p.add(req2)
    assert record is not None and record.request is req2 and record.response is resp2
    assert p.pending_count == 0


def test_a_duplicate_is_known_until_the_dedup_window_after_its_commit() -> None:
    p = pairer(dedup_window=10.0)
    req, resp = pair("a", rows(1))
    p.add(req)
    assert p.is_duplicate(req.key) and not p.is_duplicate(resp.key)
    record = p.add(resp)
    assert record is not None
    p.settle(record.keys, now=100.0)
    assert p.is_duplicate(req.key) and p.is_duplicate(resp.key)
    p.prune(now=109.0)
    assert p.is_duplicate(req.key)
    p.prune(now=111.0)
    assert not p.is_duplicate(req.key)


def test_the_same_ce_id_for_two_models_is_two_inferences() -> None:
    p = pairer()
    mine = parsed("request", "client-id-7", request_body(rows(1)))
    theirs = parsed("request", "client-id-7", request_body(rows(1)), model="other-model")
    assert p.add(mine) is None and not p.is_duplicate(theirs.key)
    assert p.add(theirs) is None and p.pending_count == 2


def test_a_half_without_partner_is_stored_alone_after_the_timeout_and_its_late_partner_too() -> None:
    p = pairer(pair_timeout=5.0)
    req, resp = pair("a", rows(2))
    p.add(req)
    assert p.expire(now=NOW_US / 1e6 + 4) == []
    [lone] = p.expire(now=NOW_US / 1e6 + 5)
    assert lone.request is req and lone.response is None
    late = p.add(resp)  # not held back for a partner that was already stored
    assert late is not None and late.request is None and late.response is resp


def test_pending_halves_are_bounded() -> None:
    p = pairer(max_pending=2)
    reqs = [pair(str(i), rows(1))[0] for i in range(4)]
    for r in reqs:
        p.add(r)
    expired = p.expire(now=0.0)
    assert [r.request.ce_id for r in expired if r.request] == ["0", "1"]
    assert p.pending_count == 2
    assert len(p.expire(now=0.0, everything=True)) == 2


# --- write-ahead log -------------------------------------------------------------------------------


def test_the_wal_replays_what_was_appended_and_ignores_a_torn_last_record(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal")
    wal.open()
    events = [*pair("a", rows(2)), pair("b", rows(1))[0]]
    for ev in events:
        wal.append(ev)
    wal.close()
    [segment] = wal.segments()
    with segment.open("ab") as f:  # a crash in the middle of the next append
        f.write(b'{"id":"c","kind":"request","n":500}\n{"inputs"')
    replayed = list(WriteAheadLog(tmp_path / "wal").replay())
    assert [(h["id"], h["kind"]) for h, _ in replayed] == [("a", "request"), ("a", "response"), ("b", "request")]
    assert [body for _, body in replayed] == [ev.body for ev in events]


def test_rotation_starts_a_new_segment_and_deletion_keeps_the_open_one(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal")
    assert wal.open() == 1
    wal.append(pair("a", rows(1))[0])
    assert wal.rotate() == 1 and wal.seq == 2
    wal.append(pair("b", rows(1))[0])
    wal.delete_through(5)
    assert [p.name for p in wal.segments()] == ["000000000002.wal"]
    assert wal.size_bytes == wal.segments()[0].stat().st_size


# --- Parquet layout --------------------------------------------------------------------------------


def test_records_become_one_row_per_predicted_row_with_the_exact_schema() -> None:
    p = pairer()
    data = rows(5)
    req, resp = pair("a", data)
    p.add(req)
    record = p.add(resp)
    assert record is not None
    [(key, table)] = tables([record]).items()
    assert key.startswith("model=rossmann/version=3/date=2026-05-28/part-20") and key.endswith(".parquet")
    assert parse_key("inference-log/" + key) == ("rossmann", "3", "2026-05-28")
    expected_schema = pa.schema(
        [
            *FIXED_COLUMNS,
            ("Store", pa.int64()),
            ("DayOfWeek", pa.int64()),
            ("Date", pa.string()),
            ("Open", pa.int64()),
            ("Promo", pa.int64()),
            ("StateHoliday", pa.string()),
            ("SchoolHoliday", pa.int64()),
            ("prediction", pa.float64()),
        ]
    )
    assert table.schema.equals(expected_schema), table.schema
    got = table.to_pylist()
    assert [r["row"] for r in got] == [0, 1, 2, 3, 4]
    assert [r["prediction"] for r in got] == predictions(data)
    assert [{k: r[k] for k in data[0]} for r in got] == data
    first = got[0]
    assert (first["ce_id"], first["model"], first["version"], first["revision"]) == (
        "a",
        MODEL,
        "3",
        "rossmann-predictor-00003",
    )
    assert (first["namespace"], first["endpoint"], first["request_id"]) == (NAMESPACE, "default", "req-a")
    assert first["received_at"].timestamp() == NOW_US / 1e6


def test_a_request_without_response_has_a_null_prediction_and_no_version() -> None:
    req, _ = pair("a", rows(2))
    p = pairer()
    p.add(req)
    [record] = p.expire(now=0.0, everything=True)
    [(key, table)] = tables([record]).items()
    assert key.startswith("model=rossmann/version=__HIVE_DEFAULT_PARTITION__/date=2026-05-28/")
    assert table.column("prediction").to_pylist() == [None, None]
    assert table.column("version").to_pylist() == ["", ""]


def test_an_input_named_like_a_fixed_column_is_prefixed_and_other_inputs_get_their_own_file() -> None:
    odd = parsed(
        "request",
        "odd",
        json.dumps({"inputs": [{"name": "row", "datatype": "FP32", "shape": [1], "data": [0.5]}]}).encode(),
    )
    req, resp = pair("a", rows(1))
    p = pairer()
    p.add(req)
    paired, alone = p.add(resp), p.add(odd)
    assert paired is not None and alone is None
    files = tables([paired, *p.expire(now=0.0, everything=True)])
    assert len(files) == 2
    odd_table = next(t for t in files.values() if "input_row" in t.column_names)
    assert odd_table.column("input_row").to_pylist() == [0.5] and odd_table.column("row").to_pylist() == [0]


# --- spool: flush, crash, recovery -----------------------------------------------------------------


def spool_config(tmp_path: Path) -> LogConfig:
    return LogConfig(spool_dir=tmp_path / "spool", pair_timeout=5.0)


def outbox_rows(spool: Spool) -> list[tuple[str, int]]:
    import pyarrow.parquet as pq

    got = []
    for path in spool.outbox.files():
        t = pq.read_table(path)
        got += list(zip(t.column("ce_id").to_pylist(), t.column("row").to_pylist(), strict=True))
    return sorted(got)


def test_a_flush_commits_files_to_the_outbox_and_carries_pending_halves_forward(tmp_path: Path) -> None:
    spool = Spool(spool_config(tmp_path))
    spool.recover(time.time())
    for ev in (*pair("a", rows(2)), pair("b", rows(1))[0]):
        assert spool.accept(ev) == "accepted"
    batch = spool.take_batch(now=NOW_US / 1e6)
    assert batch is not None and [r.first.ce_id for r in batch.records] == ["a"]
    spool.write_batch(batch, time.time())
    spool.committed(batch, time.time())
    assert outbox_rows(spool) == [("a", 0), ("a", 1)]
    assert [p.name for p in spool.wal.segments()] == ["000000000002.wal"]  # holds b, carried forward
    assert spool.accept(pair("a", rows(2))[1]) == "duplicate"
    spool.close()
    # A restart: b comes back from the WAL, a is remembered as stored.
    again = Spool(spool_config(tmp_path))
    recovery = again.recover(time.time())
    assert recovery.replayed == 1 and again.pairer.pending_count == 1
    assert again.accept(pair("a", rows(2))[0]) == "duplicate"
    assert again.accept(pair("b", rows(1))[1]) == "accepted"
    assert [r.first.ce_id for r in again.completed] == ["b"]


def test_a_crash_before_the_commit_point_replays_the_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(spool_config(tmp_path))
    spool.recover(time.time())
    for ev in pair("a", rows(2)):
        spool.accept(ev)
    batch = spool.take_batch(now=NOW_US / 1e6)
    assert batch is not None

    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(Path, "rename", crash)  # the commit record's rename: the commit point
    with pytest.raises(OSError):
        spool.write_batch(batch, time.time())
    monkeypatch.undo()
    spool.close()
    again = Spool(spool_config(tmp_path))
    recovery = again.recover(time.time())
    assert recovery.replayed == 2 and recovery.duplicates == 0
    assert [r.first.ce_id for r in again.completed] == ["a"]
    assert not any(again.staging.iterdir()) and outbox_rows(again) == []


def test_a_crash_after_the_commit_point_is_completed_and_stores_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(spool_config(tmp_path))
    spool.recover(time.time())
    for ev in pair("a", rows(2)):
        spool.accept(ev)
    batch = spool.take_batch(now=NOW_US / 1e6)
    assert batch is not None
    monkeypatch.setattr(Spool, "_publish", lambda self, seq: [])  # killed right after the commit
    spool.write_batch(batch, time.time())
    monkeypatch.undo()
    spool.close()  # and the WAL segments were never deleted
    again = Spool(spool_config(tmp_path))
    recovery = again.recover(time.time())
    assert recovery.finished == 1 and recovery.replayed == 0
    assert outbox_rows(again) == [("a", 0), ("a", 1)] and again.completed == []
    assert again.accept(pair("a", rows(2))[0]) == "duplicate"


# --- configuration ---------------------------------------------------------------------------------


def test_config_reads_env_and_names_a_bad_variable() -> None:
    config = load_config(
        {"SLUICE_INFERENCE_LOG_PORT": "9999", "SLUICE_DATA_BUCKET": "b", "SLUICE_INFERENCE_LOG_FSYNC": "1"}
    )
    assert (config.port, config.bucket, config.fsync, config.prefix) == (9999, "b", True, "inference-log/")
    assert load_config({}, port=1234).port == 1234
    with pytest.raises(ConfigError, match="SLUICE_INFERENCE_LOG_FLUSH_INTERVAL='soon'"):
        load_config({"SLUICE_INFERENCE_LOG_FLUSH_INTERVAL": "soon"})
    with pytest.raises(ConfigError, match="SLUICE_INFERENCE_LOG_FSYNC"):
        load_config({"SLUICE_INFERENCE_LOG_FSYNC": "maybe"})
    with pytest.raises(ConfigError, match="must not be negative"):
        load_config({"SLUICE_INFERENCE_LOG_PAIR_TIMEOUT": "-1"})


def test_a_segment_number_is_never_reused_after_a_commit(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal")
    assert wal.open(after=41) == 42  # commit 41 exists although wal/ is empty: 1..41 must not come back


def test_a_file_the_uploader_cannot_read_is_set_aside_not_retried_forever(tmp_path: Path) -> None:
    from serving.inference_log.uploader import Outbox, Uploader

    bad = tmp_path / "outbox" / "model=m" / "version=1" / "date=2026-01-01" / "part-x.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not parquet")
    outbox = Outbox(tmp_path / "outbox")

    class NoS3:
        def put_object(self, **kwargs: Any) -> None:
            raise AssertionError("nothing readable to upload")

    assert Uploader(outbox, NoS3(), "b", "inference-log/").upload_all()
    assert outbox.files() == [] and outbox.size_bytes == 0
    assert (tmp_path / "rejected" / "model=m" / "version=1" / "date=2026-01-01" / "part-x.parquet").exists()


def test_a_flush_that_cannot_carry_pending_halves_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(spool_config(tmp_path))
    spool.recover(time.time())
    for ev in (*pair("a", rows(2)), pair("b", rows(1))[0]):
        spool.accept(ev)

    def disk_full(event: LogEvent) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool.wal, "append", disk_full)
    with pytest.raises(OSError):
        spool.take_batch(now=NOW_US / 1e6)
    monkeypatch.undo()
    assert [r.first.ce_id for r in spool.completed] == ["a"] and spool.pairer.pending_count == 1
    batch = spool.take_batch(now=NOW_US / 1e6)
    assert batch is not None and [r.first.ce_id for r in batch.records] == ["a"]
