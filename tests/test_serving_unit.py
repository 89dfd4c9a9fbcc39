"""Unit tests of the serving runtime's parts: request decoding, metrics, the KServe model in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest
from prometheus_client import CollectorRegistry, generate_latest

from serving.decode import RequestError, decode_request
from serving.metrics import ServingMetrics
from serving.provenance import Provenance, resolve_version, write_provenance
from serving.signature import Column

COLUMNS = (
    Column("Store", "long", "int64", "INT64", True),
    Column("Rate", "double", "float64", "FP64", True),
    Column("Date", "string", "str", "BYTES", True),
    Column("When", "datetime", "datetime", "BYTES", True),
)
GOOD = {"Store": ("INT64", [1, 2]), "Rate": ("FP64", [0.5, 2]), "Date": ("BYTES", ["a", "b"]),
        "When": ("BYTES", ["2015-07-31", "2015-08-01T10:00:00"])}  # fmt: skip


def request(inputs: dict[str, tuple[str, list]], shape: list[int] | None = None, **kw) -> InferRequest:  # type: ignore[type-arg]
    return InferRequest(
        "m",
        [InferInput(n, shape or [len(d)], dt, d) for n, (dt, d) in inputs.items()],
        **kw,
    )


def test_decode_types_columns_like_the_signature() -> None:
    frame = decode_request(request(GOOD), COLUMNS, max_rows=10)
    assert list(frame.columns) == ["Store", "Rate", "Date", "When"]
    assert frame["Store"].dtype == np.int64 and frame["Rate"].dtype == np.float64
    assert frame["Date"].tolist() == ["a", "b"]
    assert frame["When"].iloc[1] == pd.Timestamp("2015-08-01 10:00")


def test_decode_accepts_nested_n_by_1_and_other_int_widths_and_grpc_bytes() -> None:
    inputs = {
        "Store": ("INT32", [[1], [2]]),
        "Rate": ("INT64", [[1], [2]]),
        "Date": ("BYTES", [[b"a"], [b"b"]]),
        "When": ("BYTES", [[b"2015-07-31"], [b"2015-07-30"]]),
    }
    frame = decode_request(request(inputs, shape=[2, 1]), COLUMNS, max_rows=10)
    assert frame["Store"].tolist() == [1, 2] and frame["Rate"].tolist() == [1.0, 2.0]
    assert frame["Date"].tolist() == ["a", "b"]


BAD = [
    ("unknown input", {**GOOD, "Nope": ("INT64", [1, 2])}, "Nope", "unknown input"),
    ("missing input", {k: v for k, v in GOOD.items() if k != "Rate"}, "Rate", "missing input"),
    ("wrong datatype", {**GOOD, "Store": ("FP32", [1.0, 2.0])}, "Store", "datatype FP32 not accepted"),
    ("fraction in int", {**GOOD, "Store": ("INT64", [1, 2.5])}, "Store", "fractional"),
    ("NaN in int", {**GOOD, "Store": ("INT64", [1, float("nan")])}, "Store", "non-finite"),
    ("inf in float", {**GOOD, "Rate": ("FP64", [1, float("inf")])}, "Rate", "not a finite number"),
    ("bool in int", {**GOOD, "Store": ("INT64", [1, True])}, "Store", "true/false"),
    ("string in int", {**GOOD, "Store": ("INT64", ["1", "2"])}, "Store", "expected integers"),
    ("null in int", {**GOOD, "Store": ("INT64", [1, None])}, "Store", "expected integers"),
    ("number in string", {**GOOD, "Date": ("BYTES", ["a", 3])}, "Date", "expected strings"),
    ("bad datetime", {**GOOD, "When": ("BYTES", ["2015-07-31", "not a date"])}, "When", "ISO 8601"),
    ("int overflow", {**GOOD, "Store": ("UINT64", [1, 2**64 - 1])}, "Store", "out of range"),
    ("columns differ", {**GOOD, "Rate": ("FP64", [1.0])}, "Rate", "has 1 rows but 'Store' has 2"),
]


@pytest.mark.parametrize(("inputs", "field", "text"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_decode_rejects_bad_input_naming_the_field(inputs: dict, field: str, text: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(RequestError) as info:
        decode_request(request(inputs), COLUMNS, max_rows=10)
    assert info.value.field == field
    assert text in str(info.value)
    assert isinstance(info.value, InvalidInput)  # what KServe maps to 400 / INVALID_ARGUMENT


def test_decode_rejects_shape_data_mismatch_rows_limit_and_content_type() -> None:
    with pytest.raises(RequestError, match="Store: shape \\[3\\] says 3 rows but data has 2"):
        decode_request(request(GOOD, shape=[3]), COLUMNS, max_rows=10)
    with pytest.raises(RequestError, match="3 rows exceed this server's limit of 2"):
        decode_request(request({k: (t, [*d, d[0]]) for k, (t, d) in GOOD.items()}), COLUMNS, max_rows=2)
    with pytest.raises(RequestError, match=r"parameters\.content_type: got 'np'"):
        decode_request(request(GOOD, parameters={"content_type": "np"}), COLUMNS, max_rows=10)
    with pytest.raises(RequestError, match="shape \\[2, 2\\] not accepted"):
        decode_request(request(GOOD, shape=[2, 2]), COLUMNS, max_rows=10)


def test_two_metric_sets_in_one_process_do_not_collide() -> None:
    a, b = ServingMetrics(), ServingMetrics()
    a.bind("m", "1").observe_predictions(np.array([0.0, 1500.0]))
    b.bind("m", "2").observe_request("ok", 0.01)
    target = CollectorRegistry()
    a.expose(target)
    text = generate_latest(target).decode()
    assert 'sluice_predicted_rows_total{model="m",revision="",version="1"} 2.0' in text
    assert 'sluice_prediction_value_bucket{le="0.0",model="m",revision="",version="1"} 1.0' in text
    assert 'sluice_prediction_value_bucket{le="2000.0",model="m",revision="",version="1"} 2.0' in text
    assert 'version="2"' not in text
    a.unexpose()


def test_version_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICE_MODEL_VERSION", raising=False)
    assert resolve_version(tmp_path) == "unknown"
    write_provenance(tmp_path, Provenance("rossmann", "4", "s3://b/k"))
    assert resolve_version(tmp_path) == "4"
    monkeypatch.setenv("SLUICE_MODEL_VERSION", "5")
    assert resolve_version(tmp_path) == "5"
    assert resolve_version(tmp_path, "6") == "6"
