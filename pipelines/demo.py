"""`make demo`: the main job for a newcomer, on the embedded default (platform already up).

Train on generated data (or $ROSSMANN_DATA_DIR), register a version in MLflow with artifacts in
LocalStack S3, gate it against the champion, and say where to look.
"""

from __future__ import annotations

import argparse
import sys

from pipelines.config import Settings, load_settings
from pipelines.train import configure, load_data


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def run(settings: Settings) -> int:
    configure(settings)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from model.evaluation import evaluate
    from model.registry import log_and_register
    from model.training import TrainConfig, train

    name = settings.model_name
    banner("1. data")
    args = argparse.Namespace(data_dir=None, stores=None, days=None, seed=None)
    raw = load_data(args, settings)

    banner("2. train xgboost + scikit-learn baseline, log to MLflow, register")
    trained = train(raw, TrainConfig())
    registered = log_and_register(trained, name)
    assert registered is not None
    print(
        f"registered {name} v{registered.version}: RMSPE {trained.metrics['rmspe']:.4f} "
        f"(baseline {trained.metrics['baseline_rmspe']:.4f}); artifacts at {registered.download_uri}"
    )

    banner("3. evaluation gate against the champion")
    client = MlflowClient()
    try:
        champion = client.get_model_version_by_alias(name, "champion").version
    except MlflowException:
        champion = None
    verdict = evaluate(client, name, registered.version, "champion", raw)
    print(f"{'PASS' if verdict.passed else 'FAIL'}: {verdict.reason}")
    if champion is None:
        client.set_registered_model_alias(name, "champion", registered.version)
        print(f"no champion yet: v{registered.version} is now `champion`")

    banner("where to look")
    print(f"MLflow UI:       {settings.tracking_uri}/#/models/{name}")
    print(f"artifacts (S3):  {registered.download_uri}")
    print("platform health: make status")
    print(f"serve over V2:   make serve   (then: curl -s localhost:8080/v2/models/{name})")
    print("stop:            make down")
    return 0


def main() -> int:
    return run(load_settings())


if __name__ == "__main__":
    sys.exit(main())
