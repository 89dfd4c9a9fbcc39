"""The serving runtime for real: the container command started as a subprocess on free ports, called
with plain HTTP, tritonclient (HTTP and gRPC) and KServe's own clients.

The model is the project's real one (model.training quick preset on small synthetic data), so what
is checked here is what `sluice serve` and the image serve.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
MODEL = "rossmann"
VERSION = "3"
MAX_ROWS = 50
INT_COLUMNS = ("Store", "DayOfWeek", "Open", "Promo", "SchoolHoliday")


# --- fixtures: the model and the running server -------------------------------------------------


@pytest.fixture(scope="session")
def raw_data() -> Any:
    from model.synthetic import generate

    return generate(stores=10, days=120, seed=3)


@pytest.fixture(scope="session")
def trained(raw_data: Any) -> Any:
    from model.training import TrainConfig, train

    return train(raw_data, TrainConfig.quick(), progress=False)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, trained: Any) -> Path:
    from model.pyfunc import save_pyfunc

    path = tmp_path_factory.mktemp("serving") / "model"
    save_pyfunc(trained, path)
    return path


@pytest.fixture(scope="session")
def sample_rows(raw_data: Any) -> pd.DataFrame:
    """20 request rows from the training data, open and closed days, as a client would send them."""
    train = raw_data.train
    rows = pd.concat([train[train["Open"] == 1].tail(15), train[train["Open"] == 0].tail(5)])
    rows = rows[["Store", "DayOfWeek", "Date", "Open", "Promo", "StateHoliday", "SchoolHoliday"]].copy()
    rows["Date"] = pd.to_datetime(rows["Date"]).dt.strftime("%Y-%m-%d")
    rows["StateHoliday"] = rows["StateHoliday"].astype(str)
    for c in INT_COLUMNS:
        rows[c] = rows[c].astype("int64")
    return rows.reset_index(drop=True)


@pytest.fixture(scope="session")
def expected(model_dir: Path, sample_rows: pd.DataFrame) -> np.ndarray:
    """What MLflow itself predicts for the sample rows (FP32 on the wire)."""
    return np.asarray(mlflow.pyfunc.load_model(str(model_dir)).predict(sample_rows), dtype=np.float32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def container_command(model_dir: Path, http_port: int, grpc_port: int, python: str = sys.executable) -> list[str]:
    """The image's CMD (serving/Dockerfile) with the ports filled in: the tests start exactly this."""
    return [python, "-m", "serving", "--model-dir", str(model_dir), "--http-port", str(http_port),
            "--grpc-port", str(grpc_port)]  # fmt: skip


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as Kubernetes sends it; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"server ignored SIGTERM for {timeout}s:\n{self.logs()}") from None
        return int(self.proc.returncode)


@contextmanager
def run_server(model_dir: Path, log: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    http_port, grpc_port = free_port(), free_port()
    full_env = {**os.environ, "SLUICE_MODEL_VERSION": VERSION, "SLUICE_MAX_ROWS": str(MAX_ROWS), **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            container_command(model_dir, http_port, grpc_port),
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, http_port, grpc_port, log)
    try:
        wait_ready(server)
        yield server
    finally:
        server.stop()


def wait_ready(server: Server, timeout: float = 120, model: str = MODEL) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.logs()}")
        try:
            if httpx.get(f"{server.url}/v2/models/{model}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"server not ready after {timeout}s:\n{server.logs()}")


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(model_dir, tmp_path_factory.mktemp("server") / "server.log") as s:
        yield s
        # A clean exit on SIGTERM is part of the contract (rolling updates send it).
        assert s.stop() == 0, s.logs()


def v2_body(rows: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    inputs = []
    for c in rows.columns:
        datatype = "BYTES" if rows[c].dtype == object else "INT64"
        inputs.append({"name": c, "datatype": datatype, "shape": [len(rows)], "data": rows[c].tolist()})
    return {"parameters": {"content_type": "pd"}, "inputs": inputs, **extra}


def infer_url(server: Server, model: str = MODEL) -> str:
    return f"{server.url}/v2/models/{model}/infer"


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
    assert f'sluice_inference_requests_total{{model="{MODEL}",outcome="ok",version="2"}} 1.0' in text
    assert 'version="1"' not in text


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
    assert meta["outputs"] == [{"name": "predictions", "datatype": "FP32", "shape": [-1]}]
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


# --- bad input: 400 (404 for an unknown model) naming the field, never a 500 or a hang ------------


def _body(rows: pd.DataFrame, change: dict[str, Any] | None = None, drop: str = "", **extra: Any) -> bytes:
    body = v2_body(rows, **extra)
    body["inputs"] = [{**i, **(change or {}).get(i["name"], {})} for i in body["inputs"] if i["name"] != drop]
    return json.dumps(body).encode()  # json.dumps writes NaN/Infinity literals, as sloppy clients do


JSON = {"content-type": "application/json"}
ROWS = 3


def _bad_cases(rows: pd.DataFrame) -> list[tuple[str, str, bytes, dict[str, str], int, str]]:
    """(id, model, body, headers, status, text the error must contain)."""
    n = len(rows)
    many = pd.concat([rows] * (MAX_ROWS // n + 1)).head(MAX_ROWS + 1)
    binary_hdr = {"content-type": "application/octet-stream", "inference-header-content-length": "26"}
    return [
        ("malformed JSON", MODEL, b'{"inputs": [', JSON, 400, "body: malformed JSON"),
        ("wrong content type", MODEL, _body(rows), {"content-type": "text/plain"}, 400, "content-type"),
        ("not a V2 object", MODEL, b"[1, 2]", JSON, 400, "body"),
        ("input without data", MODEL, b'{"inputs":[{"name":"Store","datatype":"INT64","shape":[1]}]}', JSON, 400,
         "inputs.0.data"),
        ("broken binary header", MODEL, b'{"inputs":[{"shape":[1]}]}', binary_hdr, 400, "body"),
        ("no inputs", MODEL, b'{"inputs": []}', JSON, 400, "inputs"),
        ("missing input", MODEL, _body(rows, drop="Promo"), JSON, 400, "Promo: missing input"),
        ("unknown input", MODEL,
         json.dumps({"inputs": [*v2_body(rows)["inputs"],
                                {"name": "Customers", "datatype": "INT64", "shape": [n], "data": [1] * n}]}).encode(),
         JSON, 400, "Customers: unknown input"),
        ("wrong datatype", MODEL, _body(rows, {"Store": {"datatype": "FP32"}}), JSON, 400,
         "Store: datatype FP32 not accepted"),
        ("number for a string column", MODEL,
         _body(rows, {"StateHoliday": {"datatype": "INT64", "data": [0] * n}}), JSON, 400, "StateHoliday"),
        ("columns of different lengths", MODEL, _body(rows, {"Open": {"shape": [n - 1], "data": [1] * (n - 1)}}),
         JSON, 400, "Open: has 2 rows but 'Store' has 3"),
        ("shape not matching data", MODEL, _body(rows, {"Store": {"shape": [n + 1]}}), JSON, 400,
         "Store: shape [4] says 4 rows but data has 3"),
        ("zero rows", MODEL, _body(rows, {"Store": {"shape": [0], "data": []}}), JSON, 400, "Store: shape [0]"),
        ("NaN", MODEL, _body(rows, {"Promo": {"data": [1, float("nan"), 0]}}), JSON, 400,
         "Promo: row 1 is a non-finite number"),
        ("Infinity", MODEL, _body(rows, {"Store": {"data": [float("inf"), 1, 1]}}), JSON, 400,
         "Store: row 0 is a non-finite number"),
        ("fraction", MODEL, _body(rows, {"Store": {"data": [1.5, 1, 1]}}), JSON, 400, "Store: row 0 is a fractional"),
        ("unparsable date", MODEL, _body(rows, {"Date": {"data": ["2015-02-30", "x", "2015-13-01"]}}), JSON, 400,
         "Date: expected a YYYY-MM-DD date"),
        ("unknown store", MODEL, _body(rows, {"Store": {"data": [999, 1, 1]}}), JSON, 400, "Store: unknown store 999"),
        ("negative value", MODEL, _body(rows, {"Promo": {"data": [-1, 0, 0]}}), JSON, 400, "Promo: expected one of"),
        ("day of week out of range", MODEL, _body(rows, {"DayOfWeek": {"data": [9, 1, 1]}}), JSON, 400, "DayOfWeek"),
        ("unknown state holiday", MODEL, _body(rows, {"StateHoliday": {"data": ["z", "0", "0"]}}), JSON, 400,
         "StateHoliday"),
        ("too many rows", MODEL, _body(many), JSON, 400, f"{MAX_ROWS + 1} rows exceed this server's limit"),
        ("content_type not pd", MODEL, _body(rows, parameters={"content_type": "np"}), JSON, 400,
         "parameters.content_type"),
        ("unknown output", MODEL, _body(rows, outputs=[{"name": "probabilities"}]), JSON, 400, "outputs"),
        ("unknown model", "nope", _body(rows), JSON, 404, "nope"),
    ]  # fmt: skip


@pytest.mark.integration
def test_bad_input_table(server: Server, sample_rows: pd.DataFrame) -> None:
    rows = sample_rows.head(ROWS)
    failures = []
    with httpx.Client(timeout=10) as client:
        for case, model, body, headers, status, text in _bad_cases(rows):
            r = client.post(infer_url(server, model), content=body, headers=headers)
            try:
                error = r.json()["error"]
            except (ValueError, KeyError):
                error = f"<not a V2 error body: {r.text[:200]}>"
            if r.status_code != status or text not in error:
                failures.append(f"{case}: got {r.status_code} {error!r}; expected {status} containing {text!r}")
    assert not failures, "\n".join(failures)
    # ...and the server is still serving.
    assert httpx.post(infer_url(server), json=v2_body(rows)).status_code == 200


@pytest.mark.integration
def test_unknown_routes_answer_v2_errors(server: Server) -> None:
    r = httpx.get(f"{server.url}/v2/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.get(infer_url(server))
    assert r.status_code == 405 and "error" in r.json()


# --- metrics -------------------------------------------------------------------------------------


def scrape(server: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{server.url}/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


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
