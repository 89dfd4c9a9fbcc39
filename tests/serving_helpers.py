"""The serving tests' shared parts: the project's real model, the runtime started as its container
command on free ports, and V2 request builders for REST and gRPC.

A pytest plugin (`pytest_plugins = ["serving_helpers"]` in the test modules), so the session fixtures
(the trained model) are built once for every serving test module.
"""

from __future__ import annotations

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
JSON = {"content-type": "application/json"}


# --- the model ---------------------------------------------------------------------------------------


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


# --- the running server ------------------------------------------------------------------------------


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

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.log.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

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
def run_server(
    model_dir: Path, log: Path, env: dict[str, str] | None = None, args: list[str] | None = None, model: str = MODEL
) -> Iterator[Server]:
    http_port, grpc_port = free_port(), free_port()
    full_env = {**os.environ, "SLUICE_MODEL_VERSION": VERSION, "SLUICE_MAX_ROWS": str(MAX_ROWS), **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*container_command(model_dir, http_port, grpc_port), *(args or [])],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, http_port, grpc_port, log)
    try:
        wait_ready(server, model=model)
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


# --- requests ----------------------------------------------------------------------------------------


def v2_body(rows: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    inputs = []
    for c in rows.columns:
        datatype = "BYTES" if rows[c].dtype == object else "INT64"
        inputs.append({"name": c, "datatype": datatype, "shape": [len(rows)], "data": rows[c].tolist()})
    return {"parameters": {"content_type": "pd"}, "inputs": inputs, **extra}


def infer_url(server: Server, model: str = MODEL, version: str | None = None) -> str:
    return f"{server.url}/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"


_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def grpc_request(body: dict[str, Any], model: str = MODEL, version: str = "") -> Any:
    """A V2 JSON request as a gRPC ModelInferRequest, each input's data in its datatype's contents field."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=model, model_version=version, id=str(body.get("id", "")))
    for key, value in (body.get("parameters") or {}).items():
        request.parameters[key].string_param = value
    for out in body.get("outputs") or []:
        request.outputs.add(name=out["name"])
    for inp in body["inputs"]:
        tensor = request.inputs.add(name=inp["name"], datatype=inp["datatype"], shape=inp["shape"])
        field = _CONTENTS.get(inp["datatype"].upper())
        if field is None or "data" not in inp:
            continue
        data = inp["data"]
        if field == "bytes_contents":
            data = [v if isinstance(v, bytes) else str(v).encode() for v in data]
        getattr(tensor.contents, field).extend(data)
    return request


def grpc_stub(server: Server) -> Any:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    return pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_target))


# --- metrics -----------------------------------------------------------------------------------------

Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: Server) -> Metrics:
    text = httpx.get(f"{server.url}/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """The sum of the series of `name` whose labels include `labels` (others, e.g. revision, ignored)."""
    wanted = set(labels.items())
    return sum(v for (n, lbls), v in metrics.items() if n == name and wanted <= set(lbls))


def outcome_counts(metrics: Metrics, version: str = VERSION) -> dict[str, float]:
    return {
        o: sample(metrics, "sluice_inference_requests_total", model=MODEL, version=version, outcome=o)
        for o in ("ok", "invalid", "error")
    }
