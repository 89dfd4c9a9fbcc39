"""Property-based fuzzing of the running runtime over REST and gRPC (hypothesis).

Requests start from a valid V2 request for the real model and are mutated: inputs dropped, added,
repeated; names, datatypes, shapes and data replaced by plausible or arbitrary values; the body
replaced by arbitrary JSON or bytes, sent as JSON, the binary tensor extension or gRPC (typed
contents or raw contents). The properties, for every request:
- never a 5xx (gRPC: never INTERNAL or UNKNOWN);
- every 4xx is JSON with an `error` string;
- every request addressed to the served model version is counted exactly once in
  `sluice_inference_requests_total`, and never as `error`.

Bounded for `make test`: a fixed number of examples, derandomized so a run is repeatable; set
SLUICE_FUZZ_EXAMPLES to run more (random seeds then: `SLUICE_FUZZ_EXAMPLES=5000`).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.register_assert_rewrite("serving_helpers")  # see tests/test_serving.py
from serving_helpers import (  # noqa: E402
    MAX_ROWS,
    MODEL,
    VERSION,
    Server,
    grpc_stub,
    outcome_counts,
    run_server,
    scrape,
)

pytest_plugins = ["serving_helpers"]

EXAMPLES = int(os.environ.get("SLUICE_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXAMPLES or 100,
    derandomize=not EXAMPLES,
    database=None,  # nothing written into the checkout
    deadline=None,  # a request's time is the server's, not the property's
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
COLUMNS = {"Store": "INT64", "DayOfWeek": "INT64", "Date": "BYTES", "Open": "INT64", "Promo": "INT64",
           "StateHoliday": "BYTES", "SchoolHoliday": "INT64"}  # fmt: skip
V2_TYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
            "FP64", "BYTES")  # fmt: skip
# Any well-formed date: those outside the dates a model serves are a 400 naming Date.
DATES = st.dates().map(date.isoformat)


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(model_dir, tmp_path_factory.mktemp("fuzz") / "server.log") as s:
        yield s
        assert s.stop() == 0, s.logs()


# --- strategies --------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)  # fmt: skip
datatypes = st.one_of(st.sampled_from(V2_TYPES), st.sampled_from(["int64", "Int64", "INT65", "STRING", ""]))
plausible = {
    "Store": st.integers(-1, 12) | st.sampled_from([2**31, 2**63 - 1, -(2**63)]),
    "DayOfWeek": st.integers(0, 8),
    "Open": st.integers(-1, 2),
    "Promo": st.integers(-1, 2),
    "SchoolHoliday": st.integers(-1, 2),
    "Date": DATES | st.sampled_from(["2015-02-30", "2015-7-1", "", " 2015-07-01", "20150701", "x"]),
    "StateHoliday": st.sampled_from(["0", "a", "b", "c", "d", "0 ", "e", "", "0.0"]),
}


@st.composite
def column(draw: st.DrawFn, name: str, rows: int) -> dict[str, Any]:
    values = draw(st.lists(plausible[name], min_size=rows, max_size=rows))
    return {"name": name, "datatype": COLUMNS[name], "shape": [rows], "data": values}


@st.composite
def mutated_input(draw: st.DrawFn, inp: dict[str, Any]) -> dict[str, Any]:
    inp = dict(inp)
    key = draw(st.sampled_from(["name", "datatype", "shape", "data", "parameters", "drop key", "nest"]))
    if key == "name":
        inp["name"] = draw(st.sampled_from([*COLUMNS, "Customers", ""]) | st.text(max_size=8))
    elif key == "datatype":
        inp["datatype"] = draw(datatypes)
    elif key == "shape":
        inp["shape"] = draw(st.lists(st.integers(-2, 2**40) | st.integers(0, MAX_ROWS + 2), max_size=3))
    elif key == "data":
        inp["data"] = draw(st.lists(scalars, max_size=6) | json_values)
    elif key == "parameters":
        inp["parameters"] = draw(st.dictionaries(st.sampled_from(["content_type", "binary_data_size", "x"]), scalars))
    elif key == "drop key":
        inp.pop(draw(st.sampled_from(["name", "datatype", "shape", "data"])), None)
    elif isinstance(inp.get("data"), list):  # shape [n, 1] with nested data, as some clients send
        inp["shape"] = [len(inp["data"]), 1]
        inp["data"] = [[v] for v in inp["data"]]
    return inp


@st.composite
def v2_body(draw: st.DrawFn) -> dict[str, Any]:
    """A valid request for the model, then zero or more mutations."""
    rows = draw(st.integers(1, 4) | st.just(MAX_ROWS + 1))
    inputs = [draw(column(name, rows)) for name in COLUMNS]
    body: dict[str, Any] = {"inputs": inputs}
    for _ in range(draw(st.integers(0, 3))):
        what = draw(st.sampled_from(["input", "input", "drop", "repeat", "add", "top"]))
        i = draw(st.integers(0, max(len(inputs) - 1, 0)))
        if what == "input" and inputs:
            inputs[i] = draw(mutated_input(inputs[i]))
        elif what == "drop" and inputs:
            inputs.pop(i)
        elif what == "repeat" and inputs:
            inputs.append(dict(inputs[i]))
        elif what == "add":
            inputs.append(draw(mutated_input({"name": "Customers", "datatype": "INT64", "shape": [1], "data": [1]})))
        else:
            key = draw(st.sampled_from(["id", "parameters", "outputs", "inputs", "junk"]))
            body[key] = draw(
                st.fixed_dictionaries({"content_type": st.sampled_from(["pd", "np", "str"])}) | json_values
                if key == "parameters"
                else st.lists(st.fixed_dictionaries({"name": st.sampled_from(["predictions", "x"])}), max_size=2)
                if key == "outputs"
                else json_values
            )
    return body


def _inputs(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The body's inputs that are objects (a mutation may have replaced `inputs` by anything)."""
    inputs = body.get("inputs")
    return [i for i in inputs if isinstance(i, dict)] if isinstance(inputs, list) else []


def _le32(values: list[Any]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in (str(v).encode() for v in values))


@st.composite
def rest_request(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers): JSON, the binary extension (possibly corrupted), or arbitrary bytes."""
    version = draw(st.sampled_from([None, None, None, VERSION, "99"]))
    path = f"/v2/models/{MODEL}" + (f"/versions/{version}" if version else "") + "/infer"
    body = draw(v2_body())
    kind = draw(st.sampled_from(["json", "json", "json", "binary", "bytes"]))
    if kind == "json":
        content_type = draw(st.sampled_from(["application/json", "application/json", "", "text/plain"]))
        return path, json.dumps(body).encode(), {"content-type": content_type} if content_type else {}
    if kind == "bytes":
        return path, draw(st.binary(max_size=64)), {"content-type": "application/json"}
    payload = b""
    for inp in [i for i in _inputs(body) if isinstance(i.get("data"), list)]:
        if inp.get("datatype") == "BYTES":
            raw = _le32(inp.pop("data"))
        elif inp.get("datatype") == "INT64" and all(type(v) is int and abs(v) < 2**63 for v in inp["data"]):
            raw = struct.pack(f"<{len(inp['data'])}q", *inp.pop("data"))
        else:
            continue
        raw = draw(st.sampled_from([raw, raw[:-1], raw + b"\x00", b"\xff" * len(raw)])) if raw else raw
        inp["parameters"] = {"binary_data_size": len(raw)}
        payload += raw
    header = json.dumps(body).encode()
    length = draw(st.sampled_from([len(header), len(header), len(header) + 1, 0]))
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(length)}
    return path, header + payload, headers


CONTENT_VALUES: dict[str, Any] = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1) | st.integers(-1, 12),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=12) | DATES.map(str.encode) | st.sampled_from([b"0", b"a", b"\xff"]),
}


@st.composite
def grpc_call(draw: st.DrawFn) -> tuple[Any, bool]:
    """(ModelInferRequest, addressed to the served version)."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    version = draw(st.sampled_from(["", "", "", VERSION, "99"]))
    request = pb.ModelInferRequest(model_name=MODEL, model_version=version, id=draw(st.text(max_size=6)))
    body = draw(v2_body())
    inputs = _inputs(body)
    for inp in inputs:
        shape = inp.get("shape")
        tensor = request.inputs.add(
            name=str(inp.get("name", "")),
            datatype=str(inp.get("datatype", "")),
            shape=[s for s in shape if type(s) is int and abs(s) < 2**63] if isinstance(shape, list) else [],
        )
        data = inp.get("data") if isinstance(inp.get("data"), list) else []
        field = {"INT64": "int64_contents", "BYTES": "bytes_contents"}.get(tensor.datatype)
        if field is None or draw(st.integers(0, 4)) == 0:  # contents of another type than declared
            field = draw(st.sampled_from(sorted(CONTENT_VALUES)))
            values = draw(st.lists(CONTENT_VALUES[field], max_size=5))
        elif field == "bytes_contents":
            values = [v.encode() if isinstance(v, str) else str(v).encode() for v in data]
        else:
            values = [v for v in data if type(v) is int and -(2**63) <= v < 2**63]
        getattr(tensor.contents, field).extend(values)
    if inputs and draw(st.integers(0, 3)) == 0:  # raw_input_contents instead, as tritonclient.grpc sends
        raws = draw(st.lists(st.binary(max_size=24), min_size=len(inputs), max_size=len(inputs) + 1))
        for tensor in request.inputs:
            tensor.ClearField("contents")
        request.raw_input_contents.extend(raws)
    if draw(st.booleans()):
        request.parameters["content_type"].string_param = draw(st.sampled_from(["pd", "np"]))
    return request, version in ("", VERSION)


# --- properties --------------------------------------------------------------------------------------


def _counted(before: dict[str, float], after: dict[str, float]) -> tuple[float, float]:
    return sum(after.values()) - sum(before.values()), after["error"] - before["error"]


@pytest.mark.integration
@FUZZ
@given(requests=st.lists(rest_request(), min_size=1, max_size=3))
def test_rest_answers_every_request_without_5xx(server: Server, requests: list[tuple[str, bytes, dict]]) -> None:
    before = outcome_counts(scrape(server))
    addressed = 0
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for path, content, headers in requests:
            r = client.post(path, content=content, headers=headers)
            assert r.status_code < 500, (r.status_code, r.text, content[:500])
            if r.status_code >= 400:
                assert r.headers["content-type"] == "application/json", r.text
                assert isinstance(r.json()["error"], str) and r.json()["error"], r.text
            addressed += "/versions/99/" not in path
    counted, errors = _counted(before, outcome_counts(scrape(server)))
    assert (counted, errors) == (addressed, 0)


@pytest.mark.integration
@FUZZ
@given(calls=st.lists(grpc_call(), min_size=1, max_size=3))
def test_grpc_answers_every_request_without_internal_errors(server: Server, calls: list[tuple[Any, bool]]) -> None:
    stub = grpc_stub(server)
    before = outcome_counts(scrape(server))
    for request, _ in calls:
        try:
            stub.ModelInfer(request, timeout=30)
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (e.code(), e.details())
            assert e.details()
    counted, errors = _counted(before, outcome_counts(scrape(server)))
    assert (counted, errors) == (sum(addressed for _, addressed in calls), 0)
