"""The serving runtime for real: the container command started as a subprocess on free ports, called
with plain HTTP, tritonclient (HTTP and gRPC), KServe's own clients and raw gRPC stubs.

The model is the project's real one (model.training quick preset on small synthetic data), so what
is checked here is what `sluice serve` and the image serve. A second, deliberately faulty model checks
that a real server fault is still a 500 and that it leaves the server healthy.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

# The helpers are also this module's pytest plugin (below); registered before the import so pytest
# does not warn that it cannot rewrite an already imported plugin.
pytest.register_assert_rewrite("serving_helpers")
from serving_helpers import (  # noqa: E402
    JSON,
    MAX_ROWS,
    MODEL,
    ROOT,
    VERSION,
    Server,
    container_command,
    free_port,
    grpc_request,
    grpc_stub,
    infer_url,
    outcome_counts,
    run_server,
    sample,
    scrape,
    v2_body,
    wait_ready,
)

pytest_plugins = ["serving_helpers"]


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(model_dir, tmp_path_factory.mktemp("server") / "server.log") as s:
        yield s
        # A clean exit on SIGTERM is part of the contract (rolling updates send it).
        assert s.stop() == 0, s.logs()


# --- the image runs what the tests run -----------------------------------------------------------


def test_dockerfile_cmd_is_the_tested_command() -> None:
    dockerfile = (ROOT / "serving" / "Dockerfile").read_text()
    cmd_lines = [line for line in dockerfile.splitlines() if line.startswith("CMD ")]
    assert len(cmd_lines) == 1
    assert json.loads(cmd_lines[0][4:]) == container_command(Path("/mnt/models"), 8080, 8081, python="python")


# --- in-process: the KServe model without a server -----------------------------------------------


def test_two_models_in_one_process_predict_like_pyfunc(
    model_dir: Path, sample_rows: pd.DataFrame, expected: np.ndarray
) -> None:
    from kserve.protocol.infer_type import InferInput, InferRequest
    from prometheus_client import generate_latest

    from serving.model import SluiceModel

    models = [SluiceModel(MODEL, model_dir, version=v) for v in ("1", "2")]
    for m in models:
        m.load()
    body = v2_body(sample_rows)
    request = InferRequest(
        MODEL, [InferInput(i["name"], i["shape"], i["datatype"], i["data"]) for i in body["inputs"]], request_id="r1"
    )
    response, _ = asyncio.run(models[1](request))
    np.testing.assert_array_equal(np.asarray(response.outputs[0].data, dtype=np.float32), expected)
    assert response.model_version == "2" and response.id == "r1"
    text = generate_latest(models[1].metrics.registry).decode()
    assert f'sluice_inference_requests_total{{model="{MODEL}",outcome="ok",revision="",version="2"}} 1.0' in text
    assert 'version="1"' not in text
    # This project's model takes the request's column arrays (predict_columns): no DataFrame and no
    # MLflow wrapper per call. Were MLflow's predict still in the path, this would fail.
    models[1]._pyfunc.predict = lambda *a, **k: pytest.fail("served through PyFuncModel.predict")
    again, _ = asyncio.run(models[1](request))
    np.testing.assert_array_equal(np.asarray(again.outputs[0].data, dtype=np.float32), expected)


# --- plain HTTP ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_health_and_metadata_follow_the_signature(server: Server, model_dir: Path) -> None:
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{server.url}/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}
    meta = httpx.get(f"{server.url}/v2/models/{MODEL}").json()
    signature = mlflow.models.Model.load(str(model_dir)).signature
    v2_types = {"long": "INT64", "string": "BYTES"}
    assert meta["inputs"] == [
        {"name": c.name, "datatype": v2_types[c.type.name], "shape": [-1]} for c in signature.inputs.inputs
    ]
    from model.features import FEATURES

    assert meta["outputs"] == [
        {"name": "predictions", "datatype": "FP32", "shape": [-1]},
        {"name": "contributions", "datatype": "FP32", "shape": [-1, len(FEATURES) + 1]},
    ]
    assert meta["versions"] == [VERSION] and meta["name"] == MODEL
    assert httpx.get(f"{server.url}/v2/models/nope").status_code == 404


@pytest.mark.integration
def test_plain_http_predictions_equal_mlflow(server: Server, sample_rows: pd.DataFrame, expected: np.ndarray) -> None:
    r = httpx.post(infer_url(server), json=v2_body(sample_rows, id="req-42"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "req-42" and body["model_version"] == VERSION and body["model_name"] == MODEL
    [out] = body["outputs"]
    assert out["name"] == "predictions" and out["datatype"] == "FP32" and out["shape"] == [len(sample_rows)]
    np.testing.assert_array_equal(np.asarray(out["data"], dtype=np.float32), expected)
    assert (np.asarray(out["data"])[sample_rows["Open"] == 0] == 0).all()  # closed days sell nothing


@pytest.mark.integration
def test_exactly_max_rows_is_served(server: Server, sample_rows: pd.DataFrame) -> None:
    rows = pd.concat([sample_rows] * 3).head(MAX_ROWS)
    r = httpx.post(infer_url(server), json=v2_body(rows))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["shape"] == [MAX_ROWS]


@pytest.mark.integration
def test_contributions_on_request_sum_to_the_log_prediction(
    server: Server, sample_rows: pd.DataFrame, expected: np.ndarray
) -> None:
    """TreeSHAP per feature plus the bias, over REST and gRPC, only when `outputs` asks for them."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    from model.features import FEATURES

    body = v2_body(sample_rows) | {"outputs": [{"name": "predictions"}, {"name": "contributions"}]}
    r = httpx.post(infer_url(server), json=body)
    assert r.status_code == 200, r.text
    preds, contribs = r.json()["outputs"]
    assert preds["name"] == "predictions" and contribs["name"] == "contributions"
    n, k = len(sample_rows), len(FEATURES) + 1
    assert contribs["shape"] == [n, k]
    assert contribs["parameters"]["feature_names"].split(",") == [*FEATURES, "bias"]
    values = np.asarray(contribs["data"], dtype=np.float64).reshape(n, k)
    np.testing.assert_array_equal(np.asarray(preds["data"], dtype=np.float32), expected)
    open_rows = (sample_rows["Open"] == 1).to_numpy() & (expected > 0)
    np.testing.assert_allclose(values.sum(axis=1)[open_rows], np.log1p(expected[open_rows]), rtol=1e-4, atol=1e-3)
    # Only contributions asked for: only contributions answered.
    r = httpx.post(infer_url(server), json=v2_body(sample_rows) | {"outputs": [{"name": "contributions"}]})
    assert [o["name"] for o in r.json()["outputs"]] == ["contributions"]

    reply = grpc_stub(server).ModelInfer(grpc_request(body))
    assert [o.name for o in reply.outputs] == ["predictions", "contributions"]
    assert list(reply.outputs[1].shape) == [n, k]
    grpc_values = np.frombuffer(reply.raw_output_contents[1], dtype=np.float32).reshape(n, k)
    np.testing.assert_allclose(grpc_values, values.astype(np.float32), rtol=1e-6)
    assert isinstance(reply, pb.ModelInferResponse)


# --- independent V2 clients ----------------------------------------------------------------------


def _numpy_columns(rows: pd.DataFrame) -> dict[str, tuple[str, np.ndarray]]:
    out = {}
    for c in rows.columns:
        if rows[c].dtype == object:
            out[c] = ("BYTES", np.array([s.encode() for s in rows[c]], dtype=np.object_))
        else:
            out[c] = ("INT64", rows[c].to_numpy(np.int64))
    return out


@pytest.mark.integration
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http(server: Server, sample_rows: pd.DataFrame, expected: np.ndarray, binary: bool) -> None:
    import tritonclient.http as tc

    client = tc.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    assert client.is_server_live() and client.is_model_ready(MODEL)
    assert [i["name"] for i in client.get_model_metadata(MODEL)["inputs"]] == list(sample_rows.columns)
    inputs = []
    for name, (datatype, arr) in _numpy_columns(sample_rows).items():
        inp = tc.InferInput(name, [len(arr)], datatype)
        inp.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(inp)
    outputs = [tc.InferRequestedOutput("predictions", binary_data=binary)]
    result = client.infer(MODEL, inputs, outputs=outputs, request_id="triton-http")
    np.testing.assert_array_equal(result.as_numpy("predictions"), expected)
    assert result.get_response()["model_version"] == VERSION
    assert result.get_response()["id"] == "triton-http"


# tritonclient.grpc and kserve register the same `inference.*` protobuf messages in the default
# descriptor pool; once kserve is imported, importing tritonclient.grpc fails ("Couldn't build proto
# file into descriptor pool"). So the Triton gRPC client runs in a process of its own.
TRITON_GRPC_CLIENT = """
import json, sys
import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

url, columns = sys.argv[1], json.load(sys.stdin)
client = tc.InferenceServerClient(url)
out = {"live": client.is_server_live(), "ready": client.is_model_ready("rossmann")}
meta = client.get_model_metadata("rossmann")
out["inputs"] = [[i.name, i.datatype, list(i.shape)] for i in meta.inputs]
inputs = []
for name, (datatype, values) in columns.items():
    if datatype == "BYTES":
        arr = np.array([v.encode() for v in values], dtype=np.object_)
    else:
        arr = np.array(values, np.int64)
    inp = tc.InferInput(name, [len(arr)], datatype)
    inp.set_data_from_numpy(arr)
    inputs.append(inp)
result = client.infer("rossmann", inputs, request_id="triton-grpc")
out["predictions"] = result.as_numpy("predictions").tolist()
out["model_version"], out["id"] = result.get_response().model_version, result.get_response().id
bad = tc.InferInput("Store", [2], "INT64")
bad.set_data_from_numpy(np.array([1, 2], dtype=np.int64))
for key, model, args in (("bad_input", "rossmann", [bad]), ("unknown_model", "nope", inputs)):
    try:
        client.infer(model, args)
        out[key] = ["OK", ""]
    except InferenceServerException as e:
        out[key] = [e.status(), e.message()]
print(json.dumps(out))
"""


@pytest.mark.integration
def test_tritonclient_grpc(server: Server, sample_rows: pd.DataFrame, expected: np.ndarray) -> None:
    columns = {c: ("BYTES" if sample_rows[c].dtype == object else "INT64", sample_rows[c].tolist())
               for c in sample_rows.columns}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", TRITON_GRPC_CLIENT, f"127.0.0.1:{server.grpc_port}"],
        input=json.dumps(columns),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["live"] and out["ready"]
    assert out["inputs"] == [[c, columns[c][0], [-1]] for c in sample_rows.columns]
    np.testing.assert_array_equal(np.asarray(out["predictions"], dtype=np.float32), expected)
    assert out["model_version"] == VERSION and out["id"] == "triton-grpc"
    # Bad input over gRPC is INVALID_ARGUMENT naming the field; an unknown model is NOT_FOUND.
    assert out["bad_input"][0] == "StatusCode.INVALID_ARGUMENT" and "DayOfWeek" in out["bad_input"][1]
    assert out["unknown_model"][0] == "StatusCode.NOT_FOUND"


@pytest.mark.integration
def test_kserve_clients(server: Server, sample_rows: pd.DataFrame, expected: np.ndarray) -> None:
    from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

    def request() -> InferRequest:
        inputs = []
        for name, (datatype, arr) in _numpy_columns(sample_rows).items():
            inp = InferInput(name, [len(arr)], datatype)
            inp.set_data_from_numpy(arr, binary_data=False)
            inputs.append(inp)
        return InferRequest(model_name=MODEL, infer_inputs=inputs, request_id="kserve")

    async def call() -> tuple[Any, Any]:
        rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
        grpc = InferenceGRPCClient(f"127.0.0.1:{server.grpc_port}", timeout=30)
        try:
            return await rest.infer(server.url, request(), model_name=MODEL), await grpc.infer(request())
        finally:
            await rest.close()
            await grpc.close()

    rest_response, grpc_response = asyncio.run(call())
    for response in (rest_response, grpc_response):
        [out] = response.outputs
        np.testing.assert_array_equal(out.as_numpy(), expected)
        assert response.id == "kserve"
    # InferenceRESTClient parses replies with InferResponse.from_bytes, which drops model_version
    # (KServe 0.21); the server sends it (see the plain HTTP test) and the gRPC client keeps it.
    assert grpc_response.model_version == VERSION


# --- bad input: a 4xx naming the field, over REST and gRPC, never a 500 or a hang -----------------

ROWS = 3
GRPC_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND}
BINARY = "application/octet-stream"


@dataclass(frozen=True)
class Bad:
    """One bad request: 3 good rows (`n_rows` if set) with `change`s per input, or raw bytes (REST only)."""

    status: int
    text: str  # the error must contain this
    change: dict[str, dict[str, Any]] = field(default_factory=dict)
    drop: str = ""
    add: tuple[dict[str, Any], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    n_rows: int = ROWS
    model: str = MODEL
    version: str | None = None
    raw: Callable[[pd.DataFrame], tuple[bytes, dict[str, str]]] | None = None
    grpc_raw: Callable[[pd.DataFrame], Any] | None = None
    rest: bool = True
    grpc: bool = True

    def body(self, sample_rows: pd.DataFrame) -> dict[str, Any]:
        rows = pd.concat([sample_rows] * (self.n_rows // len(sample_rows) + 1)).head(self.n_rows)
        body = v2_body(rows, **self.extra)
        inputs = [{**i, **self.change.get(i["name"], {})} for i in body["inputs"] if i["name"] != self.drop]
        body["inputs"] = [*inputs, *self.add]
        return body


def _binary(name: str, payload: bytes, size: int | None = None) -> Callable[[pd.DataFrame], tuple[bytes, dict]]:
    """A binary-extension request whose input `name` is `payload` (declared `size` bytes)."""

    def build(rows: pd.DataFrame) -> tuple[bytes, dict[str, str]]:
        body = v2_body(rows.head(ROWS))
        for i in body["inputs"]:
            if i["name"] == name:
                del i["data"]
                i["parameters"] = {"binary_data_size": len(payload) if size is None else size}
        header = json.dumps(body).encode()
        return header + payload, {"content-type": BINARY, "inference-header-content-length": str(len(header))}

    return build


def _raw(content: bytes, headers: dict[str, str] = JSON) -> Callable[[pd.DataFrame], tuple[bytes, dict]]:
    return lambda _rows: (content, headers)


def _le32_strings(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def _grpc_raw_date(payload: bytes) -> Callable[[pd.DataFrame], Any]:
    """gRPC raw_input_contents (as tritonclient.grpc sends), Date replaced by `payload`."""

    def build(rows: pd.DataFrame) -> Any:
        request = grpc_request(v2_body(rows.head(ROWS)))
        raws = []
        for tensor in request.inputs:
            values = list(tensor.contents.bytes_contents or tensor.contents.int64_contents)
            if tensor.name == "Date":
                raws.append(payload)
            elif tensor.datatype == "BYTES":
                raws.append(_le32_strings(*values))
            else:
                raws.append(np.asarray(values, dtype="<i8").tobytes())
            tensor.ClearField("contents")
        request.raw_input_contents.extend(raws)
        return request

    return build


def _one(col_first: Any, *rest: Any) -> dict[str, Any]:
    return {"data": [col_first, *rest]}


OK_DATES = ("2015-07-01", "2015-07-02")
# fmt: off
BAD_CASES: list[Any] = [
    # what only REST can send: broken bodies and encodings
    pytest.param(Bad(400, "body: malformed JSON", raw=_raw(b'{"inputs": [')), id="malformed JSON"),
    pytest.param(Bad(400, "content-type", raw=lambda r: (json.dumps(v2_body(r.head(ROWS))).encode(),
                                                         {"content-type": "text/plain"})), id="wrong content type"),
    pytest.param(Bad(400, "body", raw=_raw(b"[1, 2]")), id="not a V2 object"),
    pytest.param(Bad(400, "inputs.0.data", raw=_raw(b'{"inputs":[{"name":"Store","datatype":"INT64","shape":[1]}]}')),
                 id="input without data"),
    pytest.param(Bad(400, "inputs: every input needs a `name`",
                     raw=_raw(b'{"inputs":[{"shape":[1]}]}', {"content-type": BINARY,
                                                               "inference-header-content-length": "26"})),
                 id="binary header without names"),
    pytest.param(Bad(400, "Date: BYTES element 0: length prefix 1000 runs past",
                     raw=_binary("Date", struct.pack("<I", 1000) + b"2015-07-01")), id="binary bad length prefix"),
    pytest.param(Bad(400, "Date: row 0 is not valid UTF-8",
                     raw=_binary("Date", _le32_strings(b"\xff\xfe", *(d.encode() for d in OK_DATES)))),
                 id="binary bad UTF-8"),
    pytest.param(Bad(400, "Date: binary_data_size 99 runs past the end of the body",
                     raw=_binary("Date", _le32_strings(b"2015-07-01"), size=99)), id="binary size past the end"),
    pytest.param(Bad(400, "Promo: row 1 is a non-finite number", change={"Promo": _one(1, float("nan"), 0)},
                     grpc=False), id="NaN"),
    pytest.param(Bad(400, "Store: row 0 is a non-finite number", change={"Store": _one(float("inf"), 1, 1)},
                     grpc=False), id="Infinity"),
    pytest.param(Bad(400, "Store: row 0 is a fractional", change={"Store": _one(1.5, 1, 1)}, grpc=False),
                 id="fraction"),
    # what only gRPC can send: typed contents that are not text, raw contents
    pytest.param(Bad(400, "Date: row 0 is not valid UTF-8", change={"Date": _one(b"\xff\xfe", *OK_DATES)},
                     rest=False), id="bytes not UTF-8"),
    pytest.param(Bad(400, "Date: BYTES raw contents: a length prefix runs past",
                     grpc_raw=_grpc_raw_date(struct.pack("<I", 1000) + b"2015-07-01"), rest=False),
                 id="raw contents bad length prefix"),
    # the same request over both
    pytest.param(Bad(400, "inputs", change={}, extra={"inputs": []}), id="no inputs"),
    pytest.param(Bad(400, "Promo: missing input", drop="Promo"), id="missing input"),
    pytest.param(Bad(400, "Customers: unknown input",
                     add=({"name": "Customers", "datatype": "INT64", "shape": [ROWS], "data": [1] * ROWS},)),
                 id="unknown input"),
    pytest.param(Bad(400, "Store: datatype FP32 not accepted", change={"Store": {"datatype": "FP32"}}),
                 id="wrong datatype"),
    pytest.param(Bad(400, "Store: datatype 'int64' is not a V2 datatype; they are upper case: INT64",
                     change={"Store": {"datatype": "int64"}}), id="lower-case datatype"),
    pytest.param(Bad(400, "Store: datatype 'INT65' is not a V2 datatype", change={"Store": {"datatype": "INT65"}}),
                 id="unknown datatype"),
    pytest.param(Bad(400, "StateHoliday", change={"StateHoliday": {"datatype": "INT64", "data": [0] * ROWS}}),
                 id="number for a string column"),
    pytest.param(Bad(400, "Open: has 2 rows but 'Store' has 3", change={"Open": {"shape": [2], "data": [1, 1]}}),
                 id="columns of different lengths"),
    pytest.param(Bad(400, "Store: shape [4] says 4 rows but data has 3", change={"Store": {"shape": [4]}}),
                 id="shape not matching data"),
    pytest.param(Bad(400, "Store: shape [0]", change={"Store": {"shape": [0], "data": []}}), id="zero rows"),
    pytest.param(Bad(400, "Date: expected a YYYY-MM-DD date", change={"Date": _one("2015-02-30", *OK_DATES)}),
                 id="unparsable date"),
    *(pytest.param(Bad(400, "Date", change={"Date": _one(date, *OK_DATES)}), id=f"date {date}")
      for date in ("1989-12-31", "1900-01-01", "2262-04-11")),
    pytest.param(Bad(400, "Store: unknown store 999", change={"Store": _one(999, 1, 1)}), id="unknown store"),
    pytest.param(Bad(400, f"Store: unknown store {2**63 - 1}", change={"Store": _one(2**63 - 1, 1, 1)}),
                 id="store 2**63-1"),
    pytest.param(Bad(400, "Promo: expected one of", change={"Promo": _one(-1, 0, 0)}), id="negative value"),
    pytest.param(Bad(400, "DayOfWeek", change={"DayOfWeek": _one(9, 1, 1)}), id="day of week out of range"),
    pytest.param(Bad(400, "StateHoliday", change={"StateHoliday": _one("z", "0", "0")}), id="unknown state holiday"),
    pytest.param(Bad(400, "StateHoliday: row 0 is '0 ', with surrounding whitespace",
                     change={"StateHoliday": _one("0 ", "0", "0")}), id="value with a trailing space"),
    pytest.param(Bad(400, f"{MAX_ROWS + 1} rows exceed this server's limit", n_rows=MAX_ROWS + 1),
                 id="too many rows"),
    pytest.param(Bad(400, "parameters.content_type", extra={"parameters": {"content_type": "np"}}),
                 id="content_type not pd"),
    pytest.param(Bad(400, "outputs", extra={"outputs": [{"name": "probabilities"}]}), id="unknown output"),
    pytest.param(Bad(404, "nope", model="nope"), id="unknown model"),
    pytest.param(Bad(404, "model rossmann has no version '99' here; this server serves version 3", version="99"),
                 id="another version"),
]
# fmt: on


def _over(transport: str) -> list[Any]:
    cases = [p for p in BAD_CASES if getattr(p.values[0], transport)]
    return [p for p in cases if p.values[0].raw is None] if transport == "grpc" else cases


def _check_error(error: str, case: Bad) -> None:
    assert case.text in error
    assert not re.match(r"^([\w.-]+): \1:", error), f"the field is repeated: {error!r}"


@pytest.mark.integration
@pytest.mark.parametrize("case", _over("rest"))
def test_bad_input_rest(server: Server, sample_rows: pd.DataFrame, case: Bad) -> None:
    if case.raw is not None:
        content, headers = case.raw(sample_rows)
    else:
        content, headers = json.dumps(case.body(sample_rows)).encode(), JSON  # NaN/Infinity literals as sloppy clients
    r = httpx.post(infer_url(server, case.model, case.version), content=content, headers=headers, timeout=10)
    assert r.headers["content-type"] == "application/json", r.text
    assert r.status_code == case.status, r.text
    _check_error(r.json()["error"], case)


@pytest.mark.integration
@pytest.mark.parametrize("case", _over("grpc"))
def test_bad_input_grpc(server: Server, sample_rows: pd.DataFrame, case: Bad) -> None:
    if case.grpc_raw is not None:
        request = case.grpc_raw(sample_rows)
    else:
        request = grpc_request(case.body(sample_rows), case.model, case.version or "")
    with pytest.raises(grpc.RpcError) as info:
        grpc_stub(server).ModelInfer(request, timeout=10)
    assert info.value.code() == GRPC_CODES[case.status], info.value.details()
    _check_error(info.value.details(), case)


@pytest.mark.integration
def test_after_bad_input_the_server_still_serves(server: Server, sample_rows: pd.DataFrame) -> None:
    assert httpx.post(infer_url(server), json=v2_body(sample_rows)).status_code == 200
    assert grpc_stub(server).ModelInfer(grpc_request(v2_body(sample_rows))).outputs[0].shape == [len(sample_rows)]


@pytest.mark.integration
def test_unknown_routes_and_methods_answer_v2_errors(server: Server) -> None:
    r = httpx.get(f"{server.url}/v2/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.get(infer_url(server))
    assert r.status_code == 405 and "error" in r.json()
    assert r.headers["allow"] == "POST"


@pytest.mark.integration
def test_rejections_keep_the_connection_and_log_one_line_each(server: Server, sample_rows: pd.DataFrame) -> None:
    good = json.dumps(v2_body(sample_rows.head(1))).encode()
    bad = [
        ("POST", "/v2/models/rossmann/infer", b'{"inputs": [', 400),
        ("POST", "/v2/models/rossmann/infer", json.dumps(v2_body(sample_rows.head(1).assign(Store=999))).encode(), 400),
        ("POST", "/v2/models/nope/infer", good, 404),
        ("POST", "/v2/models/rossmann/versions/99/infer", good, 404),
        ("GET", "/v2/models/rossmann/infer", None, 405),
        ("POST", "/v2/models/rossmann/infer", b" " * (9 * 2**20), 413),  # over the 8 MiB default
    ]
    offset = server.log_size()
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    conn.connect()
    sock = conn.sock
    for method, path, body, status in [*bad, ("POST", "/v2/models/rossmann/infer", good, 200)] * 2:
        conn.request(method, path, body=body, headers=JSON)
        response = conn.getresponse()
        content = json.loads(response.read())
        assert response.status == status, content
        assert ("error" in content) == (status != 200)
        assert conn.sock is sock, f"the server closed the connection after {status}"
    conn.close()
    time.sleep(0.5)  # the log is written by another process
    logged = server.log_since(offset).splitlines()
    assert len(logged) == 2 * len(bad), "\n".join(logged)
    assert all(" rejected " in line for line in logged), "\n".join(logged)


@pytest.mark.integration
def test_grpc_rejections_log_one_line_each_and_successes_none(server: Server, sample_rows: pd.DataFrame) -> None:
    stub = grpc_stub(server)
    good = grpc_request(v2_body(sample_rows.head(2)))
    bad = [grpc_request(v2_body(sample_rows.head(2).assign(Store=999))), grpc_request(v2_body(sample_rows), "nope")]
    offset = server.log_size()
    for request in [good, *bad, good]:
        try:
            stub.ModelInfer(request)
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    time.sleep(0.5)
    logged = server.log_since(offset).splitlines()
    assert len(logged) == len(bad) and all(" rejected gRPC " in line for line in logged), "\n".join(logged)


@pytest.mark.integration
def test_body_over_the_limit_is_refused_before_it_is_sent(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as s:
        s.sendall(b"POST /v2/models/rossmann/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 52428800\r\n\r\n{")  # fmt: skip
        response = http.client.HTTPResponse(s)
        response.begin()  # the answer comes while 50 MB are still to be sent
        assert response.status == 413
        assert json.loads(response.read())["error"] == "body: larger than this server's limit of 8388608 bytes"


# --- versions and response shape ---------------------------------------------------------------------


@pytest.mark.integration
def test_versioned_routes_serve_the_own_version_only(server: Server, sample_rows: pd.DataFrame) -> None:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    base = f"{server.url}/v2/models/{MODEL}/versions"
    r = httpx.post(f"{base}/{VERSION}/infer", json=v2_body(sample_rows))
    assert r.status_code == 200 and r.json()["model_version"] == VERSION, r.text
    assert httpx.get(f"{base}/{VERSION}").json()["versions"] == [VERSION]
    assert httpx.get(f"{base}/{VERSION}/ready").json() == {"name": MODEL, "ready": True}
    for path in ("/99/infer", "/99", "/99/ready"):
        r = httpx.request("POST" if path.endswith("infer") else "GET", base + path, json=v2_body(sample_rows))
        assert r.status_code == 404 and "no version '99'" in r.json()["error"], r.text

    stub = grpc_stub(server)
    assert stub.ModelInfer(grpc_request(v2_body(sample_rows), version=VERSION)).model_version == VERSION
    assert list(stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL)).versions) == [VERSION]
    assert stub.ModelReady(pb.ModelReadyRequest(name=MODEL, version=VERSION)).ready
    for call in (
        lambda: stub.ModelInfer(grpc_request(v2_body(sample_rows), version="99")),
        lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL, version="99")),
        lambda: stub.ModelReady(pb.ModelReadyRequest(name=MODEL, version="99")),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()


@pytest.mark.integration
def test_responses_leave_out_null_fields(server: Server, sample_rows: pd.DataFrame) -> None:
    r = httpx.post(infer_url(server), json=v2_body(sample_rows, id="n1"))
    assert r.status_code == 200
    body = r.json()
    assert "parameters" not in body and all("parameters" not in o for o in body["outputs"]), body
    assert "null" not in r.text


# --- metrics -------------------------------------------------------------------------------------


@pytest.mark.integration
def test_metrics_move_per_model_version(server: Server, sample_rows: pd.DataFrame) -> None:
    mv = {"model": MODEL, "version": VERSION}
    before = scrape(server)
    info = [
        v for (name, labels), v in before.items() if name == "sluice_model_info" and mv.items() <= dict(labels).items()
    ]
    assert info == [1.0]
    assert httpx.post(infer_url(server), json=v2_body(sample_rows)).status_code == 200
    assert httpx.post(infer_url(server), json=v2_body(sample_rows.head(2).assign(Store=999))).status_code == 400
    assert httpx.post(infer_url(server), content=b"{", headers=JSON).status_code == 400
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("sluice_inference_requests_total", **mv, outcome="ok") == 1
    assert delta("sluice_inference_requests_total", **mv, outcome="invalid") == 2  # model rejection + bad JSON
    assert delta("sluice_inference_requests_total", **mv, outcome="error") == 0
    assert delta("sluice_predicted_rows_total", **mv) == len(sample_rows)
    assert delta("sluice_prediction_value_count", **mv) == len(sample_rows)
    assert delta("sluice_prediction_value_bucket", **mv, le="0.0") == (sample_rows["Open"] == 0).sum()
    assert delta("sluice_inference_duration_seconds_count", **mv) == 2
    # KServe's own histograms are served from the same endpoint (one registry, one /metrics).
    assert delta("request_predict_seconds_count", model_name=MODEL) >= 1


# --- a real server fault, and slow clients -----------------------------------------------------------

FAULTY_MODEL = '''
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class Faulty(PythonModel):
    """Store 13 hits a bug: the model raises something that is not a bad-input error."""

    def predict(self, context, model_input, params=None):
        if (model_input["Store"] == 13).any():
            raise RuntimeError("a bug in the model")
        return pd.Series([1.0] * len(model_input))


mlflow.models.set_model(Faulty())
'''
SHORT = 1.0  # seconds: the faulty server's header, body and idle timeouts


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    folder = tmp_path_factory.mktemp("faulty")
    (folder / "faulty.py").write_text(FAULTY_MODEL)
    signature = ModelSignature(inputs=Schema([ColSpec("long", "Store")]), outputs=Schema([ColSpec("double", "p")]))
    mlflow.pyfunc.save_model(
        str(folder / "model"), python_model=str(folder / "faulty.py"), signature=signature, pip_requirements=[]
    )
    args = ["--header-timeout", str(SHORT), "--body-timeout", str(SHORT), "--idle-timeout", "1"]
    with run_server(folder / "model", folder / "server.log", args=args) as s:
        yield s
        assert s.stop() == 0, s.logs()


def _store(*stores: int) -> dict[str, Any]:
    return {"inputs": [{"name": "Store", "datatype": "INT64", "shape": [len(stores)], "data": list(stores)}]}


@pytest.mark.integration
def test_a_server_fault_is_a_500_counted_logged_and_the_connection_stays_usable(faulty_server: Server) -> None:
    before = outcome_counts(scrape(faulty_server))
    offset = faulty_server.log_size()
    conn = http.client.HTTPConnection("127.0.0.1", faulty_server.http_port, timeout=30)
    conn.connect()
    sock = conn.sock
    for stores, status in (((1, 13), 500), ((1, 2), 200), ((13,), 500), ((2,), 200)):
        conn.request("POST", f"/v2/models/{MODEL}/infer", body=json.dumps(_store(*stores)), headers=JSON)
        response = conn.getresponse()
        content = json.loads(response.read())
        assert response.status == status, content
        assert conn.sock is sock, "the server dropped the connection after a 500"
    assert content["outputs"][0]["data"] == [1.0]
    conn.close()
    with pytest.raises(grpc.RpcError) as info:
        grpc_stub(faulty_server).ModelInfer(grpc_request(_store(13)))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "internal server error (RuntimeError)"  # no internals to the client

    after = outcome_counts(scrape(faulty_server))
    assert {o: after[o] - before[o] for o in after} == {"ok": 2, "invalid": 0, "error": 3}
    time.sleep(0.5)
    logged = faulty_server.log_since(offset)
    assert logged.count("Traceback") == 3 and logged.count("RuntimeError: a bug in the model") == 3, logged


def _raw_response(s: socket.socket, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    s.settimeout(within)
    started, chunks = time.monotonic(), []
    while chunk := s.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks), time.monotonic() - started


@pytest.mark.integration
def test_slow_clients_are_cut_off(faulty_server: Server) -> None:
    address = ("127.0.0.1", faulty_server.http_port)
    # Headers that never end: 408, closed.
    with socket.create_connection(address) as s:
        s.sendall(b"POST /v2/models/rossmann/infer HTTP/1.1\r\nHost: t\r\n")
        answer, took = _raw_response(s, within=10 * SHORT)
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"error": "headers: not received within 1 s"' in answer, answer
    # Headers sent one byte every 0.1 s: each byte in time for an idle timer, the whole not for the deadline.
    with socket.create_connection(address) as s:
        started = time.monotonic()
        for byte in b"POST /v2/models/rossmann/infer HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 100:
            if select.select([s], [], [], 0.1)[0]:  # the server answered: stop before it sees a reset
                break
            s.sendall(bytes([byte]))
        try:
            answer, _ = _raw_response(s, within=10 * SHORT)
        except ConnectionResetError:
            # On a loaded machine a byte can leave after the server's 408 and close, and the kernel then
            # discards the unread 408 on the reset: the client was still cut off, which is the point.
            answer = b"HTTP/1.1 408 (reset after the answer)"
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ") and took < 4 * SHORT, (answer, took)
    # A body that stops half way: 408 naming the body, closed.
    with socket.create_connection(address) as s:
        s.sendall(b"POST /v2/models/rossmann/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"inputs\"")  # fmt: skip
        answer, took = _raw_response(s, within=10 * SHORT)
    assert answer.startswith(b"HTTP/1.1 408 ") and b'{"error":"body: not received within 1 s"}' in answer, answer
    # A connection that says nothing, and one that stays idle after a request: closed.
    with socket.create_connection(address) as s:
        answer, took = _raw_response(s, within=10 * SHORT)
    assert answer == b"" and took < 5 * SHORT
    with socket.create_connection(address) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        answer, took = _raw_response(s, within=10 * SHORT)
    assert answer.startswith(b"HTTP/1.1 200 ") and took < 5 * SHORT
    # Headers too long: 431.
    with socket.create_connection(address) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        answer, _ = _raw_response(s, within=10 * SHORT)
    assert answer.startswith(b"HTTP/1.1 431 "), answer
    # ...and the server is still serving.
    assert httpx.post(infer_url(faulty_server), json=_store(1)).status_code == 200


# --- lifecycle -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_sigterm_drains_and_exits_cleanly(model_dir: Path, sample_rows: pd.DataFrame, tmp_path: Path) -> None:
    with run_server(model_dir, tmp_path / "server.log") as s:
        assert httpx.post(infer_url(s), json=v2_body(sample_rows)).status_code == 200
        started = time.monotonic()
        assert s.stop() == 0, s.logs()
        assert time.monotonic() - started < 25


@pytest.mark.integration
def test_version_from_sluice_json_when_env_is_unset(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from serving.provenance import Provenance, write_provenance

    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    write_provenance(copy, Provenance(MODEL, "11", "s3://sluice-models/1/models/m-x/artifacts"))
    env = {k: v for k, v in os.environ.items() if k != "SLUICE_MODEL_VERSION"}
    with run_server(copy, tmp_path / "server.log", env={**env, "SLUICE_MODEL_VERSION": ""}) as s:
        assert httpx.get(f"{s.url}/v2/models/{MODEL}").json()["versions"] == ["11"]


# --- sluice serve: registry and s3:// in LocalStack ----------------------------------------------


def _platform_env(settings: Any) -> dict[str, str]:
    """The env that makes `sluice` (pipelines.config.load_settings) see the test platform."""
    return {
        **os.environ,
        "SLUICE_STATE_DIR": str(settings.state_dir),
        "SLUICE_S3_HOST": settings.s3_host,
        "SLUICE_S3_PORT": str(settings.s3_port),
        "SLUICE_MLFLOW_HOST": settings.mlflow_host,
        "SLUICE_MLFLOW_PORT": str(settings.mlflow_port),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "AWS_ACCESS_KEY_ID": settings.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key,
        "AWS_DEFAULT_REGION": settings.aws_region,
        "SLUICE_MODEL_VERSION": "",
    }


@contextmanager
def run_sluice_serve(args: list[str], env: dict[str, str], log: Path, model: str) -> Iterator[Server]:
    http_port, grpc_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "pipelines.cli", "serve", *args, "--port", str(http_port),
           "--grpc-port", str(grpc_port)]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(proc, http_port, grpc_port, log)
    try:
        wait_ready(server, timeout=180, model=model)
        yield server
    finally:
        assert server.stop() == 0, server.logs()


@pytest.mark.integration
def test_sluice_serve_registered_version_and_s3_uri_from_localstack(
    platform_env: Any, trained: Any, sample_rows: pd.DataFrame, expected: np.ndarray, tmp_path: Path
) -> None:
    import mlflow
    from mlflow import MlflowClient

    from model.pyfunc import log_pyfunc

    name = "serving-test"
    mlflow.set_tracking_uri(platform_env.tracking_uri)
    mlflow.set_experiment("serving-test")
    with mlflow.start_run():
        log_pyfunc(trained, registered_model_name=name)
    client = MlflowClient(platform_env.tracking_uri)
    version = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    client.set_registered_model_alias(name, "champion", str(version))
    uri = client.get_model_version_download_uri(name, str(version))
    assert uri.startswith("s3://"), uri
    env = _platform_env(platform_env)

    with run_sluice_serve(["--model", name, "--alias", "champion"], env, tmp_path / "alias.log", name) as s:
        meta = httpx.get(f"{s.url}/v2/models/{name}").json()
        assert meta["versions"] == [str(version)]
        r = httpx.post(infer_url(s, name), json=v2_body(sample_rows))
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == str(version)
        np.testing.assert_array_equal(np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32), expected)
    downloaded = platform_env.state_dir / "models" / name / f"v{version}"
    assert json.loads((downloaded / "sluice.json").read_text())["source_uri"] == uri

    with run_sluice_serve(["--model", name, "--model-uri", uri], env, tmp_path / "uri.log", name) as s:
        r = httpx.post(infer_url(s, name), json=v2_body(sample_rows))
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "unknown"  # a bare URI does not say which version it is
        np.testing.assert_array_equal(np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32), expected)


@pytest.mark.integration
def test_sluice_serve_registered_version_from_a_local_mlflow_store(
    trained: Any, sample_rows: pd.DataFrame, expected: np.ndarray, tmp_path: Path
) -> None:
    """The offline mode: MLFLOW_TRACKING_URI=sqlite:///..., artifacts on the local disk, no server."""
    import mlflow

    from model.pyfunc import log_pyfunc

    name, tracking_uri = "local-test", f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("local", artifact_location=str(tmp_path / "mlruns")))
    with mlflow.start_run():
        log_pyfunc(trained, registered_model_name=name)
    uri = mlflow.MlflowClient().get_model_version_download_uri(name, "1")
    assert Path(uri).is_dir(), uri  # a plain local path: what the storage initializer would symlink
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "SLUICE_STATE_DIR": str(tmp_path / "state"),
           "SLUICE_MODEL_VERSION": ""}  # fmt: skip

    with run_sluice_serve(["--model", name, "--version", "1"], env, tmp_path / "serve.log", name) as s:
        r = httpx.post(infer_url(s, name), json=v2_body(sample_rows))
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "1"
        np.testing.assert_array_equal(np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32), expected)
    served = tmp_path / "state" / "models" / name / "v1"
    assert not [p for p in served.rglob("*") if p.is_symlink()]  # copies: the store can change under it
