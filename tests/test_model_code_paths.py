"""Each model version predicts with the code it was trained with (MLflow code_paths).

The version is saved with today's `model` package; then the package changes (a copy whose forecast
doubles every prediction stands in for a later commit) and the version is loaded in a fresh process
where that changed copy is the importable `model`, as it would be in a runtime built later. The
predictions must not move. The control: the same version with its logged code removed does pick up
the changed copy, so the test can tell the two apart.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
# Two fresh interpreters that import mlflow: ~10 s on a quiet machine, so not in the fast set.
pytestmark = pytest.mark.slow

PREDICT = """
import json, sys
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
rows = pd.read_json(sys.argv[2], orient="split", dtype=False, convert_dates=False)
import model as package  # whichever copy the load imported
print(json.dumps({"predictions": [float(v) for v in model.predict(rows)], "package": package.__file__}))
"""

CHANGED_FORECAST = """

# --- changed by tests/test_model_code_paths.py: a later commit's forecast ---
_logged_predict = Forecaster.predict


def _changed_predict(self, req):
    return _logged_predict(self, req) * 2 + 1


Forecaster.predict = _changed_predict
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, np.ndarray]:
    from model.pyfunc import save_pyfunc
    from model.schema import INPUT_COLUMNS
    from model.synthetic import generate
    from model.training import TrainConfig, train

    raw = generate(stores=6, days=90, seed=8)
    trained = train(raw, TrainConfig.quick(), progress=False)
    path = tmp_path_factory.mktemp("code-paths") / "v1"
    save_pyfunc(trained, path)
    rows = raw.train[INPUT_COLUMNS].tail(12).assign(Date=lambda d: d["Date"].dt.strftime("%Y-%m-%d"))
    rows = rows.astype({"StateHoliday": str}).reset_index(drop=True)
    import mlflow.pyfunc

    return path, rows, np.asarray(mlflow.pyfunc.load_model(str(path)).predict(rows))


def _predict_in_fresh_process(model_dir: Path, rows: pd.DataFrame, code: Path, tmp: Path) -> dict[str, Any]:
    rows_file = tmp / "rows.json"
    rows.to_json(rows_file, orient="split", index=False)
    # The changed copy comes first on the path, before the checkout the virtualenv points at.
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.run(
        [sys.executable, "-c", PREDICT, str(model_dir), str(rows_file)],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.fixture
def changed_code(tmp_path: Path) -> Path:
    code = tmp_path / "later-commit"
    shutil.copytree(ROOT / "model", code / "model", ignore=shutil.ignore_patterns("__pycache__"))
    with (code / "model" / "forecaster.py").open("a") as f:
        f.write(CHANGED_FORECAST)
    return code


def test_the_model_package_is_logged_with_the_version(saved: tuple[Path, pd.DataFrame, np.ndarray]) -> None:
    path, _, _ = saved
    flavor = yaml.safe_load((path / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["code"] == "code"
    logged = {p.name for p in (path / "code" / "model").glob("*.py")}
    assert {"__init__.py", "pyfunc.py", "features.py", "training.py"} <= logged
    assert not list((path / "code").rglob("__pycache__"))


def test_a_version_predicts_with_its_own_code_after_the_package_changes(
    saved: tuple[Path, pd.DataFrame, np.ndarray], changed_code: Path, tmp_path: Path
) -> None:
    path, rows, expected = saved
    out = _predict_in_fresh_process(path, rows, changed_code, tmp_path)
    assert Path(out["package"]).is_relative_to(path / "code")
    np.testing.assert_array_equal(np.asarray(out["predictions"]), expected)


def test_without_its_logged_code_the_version_follows_the_changed_package(
    saved: tuple[Path, pd.DataFrame, np.ndarray], changed_code: Path, tmp_path: Path
) -> None:
    path, rows, expected = saved
    bare = tmp_path / "v1-without-code"
    shutil.copytree(path, bare, ignore=shutil.ignore_patterns("code"))
    mlmodel = yaml.safe_load((bare / "MLmodel").read_text())
    del mlmodel["flavors"]["python_function"]["code"]
    (bare / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    out = _predict_in_fresh_process(bare, rows, changed_code, tmp_path)
    assert Path(out["package"]).is_relative_to(changed_code)
    np.testing.assert_allclose(np.asarray(out["predictions"]), expected * 2 + 1)
