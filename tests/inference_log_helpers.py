"""V2 bodies of the Rossmann model and KServe-style events for the inference-log tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from prometheus_client.parser import text_string_to_metric_families

from serving.inference_log.sender import logger_event

ROOT = Path(__file__).resolve().parent.parent

MODEL = "rossmann"
NAMESPACE = "sluice-serving"
INT_COLUMNS = ("Store", "DayOfWeek", "Open", "Promo", "SchoolHoliday")


def rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n Rossmann-shaped input rows, different for each seed."""
    out = []
    for i in range(n):
        k = seed * 1000 + i
        out.append(
            {
                "Store": 1 + k % 1115,
                "DayOfWeek": 1 + k % 7,
                "Date": f"2015-07-{1 + k % 28:02d}",
                "Open": 1,
                "Promo": k % 2,
                "StateHoliday": "0" if k % 5 else "a",
                "SchoolHoliday": (k // 2) % 2,
            }
        )
    return out


def request_body(data: list[dict[str, Any]], request_id: str = "") -> bytes:
    inputs = []
    for name in ("Store", "DayOfWeek", "Date", "Open", "Promo", "StateHoliday", "SchoolHoliday"):
        datatype = "INT64" if name in INT_COLUMNS else "BYTES"
        inputs.append({"name": name, "datatype": datatype, "shape": [len(data)], "data": [r[name] for r in data]})
    body: dict[str, Any] = {"parameters": {"content_type": "pd"}, "inputs": inputs}
    if request_id:
        body["id"] = request_id
    return json.dumps(body).encode()


def predictions(data: list[dict[str, Any]]) -> list[float]:
    """Values a model could return; exact in float32 so the response's FP32 data round-trips."""
    return [float(1000 + r["Store"] * 4 + r["Promo"] * 500) + 0.5 for r in data]


def response_body(data: list[dict[str, Any]], version: str = "3", request_id: str = "") -> bytes:
    preds = predictions(data)
    body: dict[str, Any] = {
        "model_name": MODEL,
        "model_version": version,
        "outputs": [{"name": "predictions", "datatype": "FP32", "shape": [len(preds)], "data": preds}],
    }
    if request_id:
        body["id"] = request_id
    return json.dumps(body).encode()


def event(
    kind: Literal["request", "response"], ce_id: str, body: bytes, revision: str = "rossmann-predictor-00003", **kw: Any
) -> tuple[dict[str, str], bytes]:
    return logger_event(
        kind,
        ce_id,
        body,
        model=kw.pop("model", MODEL),
        namespace=kw.pop("namespace", NAMESPACE),
        endpoint=kw.pop("endpoint", "default"),
        revision=revision,
        **kw,
    )


# --- a receiver process ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Receiver:
    """A real `python -m serving.inference_log` process."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def send(self, delivery: tuple[dict[str, str], bytes]) -> httpx.Response:
        headers, body = delivery
        return httpx.post(f"{self.url}/", headers=headers, content=body, timeout=10)

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"receiver ignored {sig.name} for {timeout}s:\n{self.logs()}") from None
        return int(self.proc.returncode)


def receiver_env(aws_env: dict[str, str], bucket: str, spool: Path, **settings: str) -> dict[str, str]:
    """Env of a receiver for tests: short timers so flushes and timeouts take a fraction of a second."""
    env = {
        **os.environ,
        **aws_env,
        "SLUICE_DATA_BUCKET": bucket,
        "SLUICE_INFERENCE_LOG_SPOOL_DIR": str(spool),
        "SLUICE_INFERENCE_LOG_FLUSH_INTERVAL": "0.3",
        "SLUICE_INFERENCE_LOG_PAIR_TIMEOUT": "1",
        "SLUICE_INFERENCE_LOG_DRAIN_TIMEOUT": "3",
        "SLUICE_INFERENCE_LOG_UPLOAD_RETRY_MAX": "1",
    }
    env.update({f"SLUICE_INFERENCE_LOG_{k.upper()}": v for k, v in settings.items()})
    return env


@contextmanager
def run_receiver(env: dict[str, str], log: Path, timeout: float = 60) -> Iterator[Receiver]:
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving.inference_log", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    receiver = Receiver(proc, port, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"receiver exited with {proc.returncode}:\n{receiver.logs()}")
            try:
                if httpx.get(f"{receiver.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver not up after {timeout}s:\n{receiver.logs()}")
            time.sleep(0.1)
        yield receiver
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
