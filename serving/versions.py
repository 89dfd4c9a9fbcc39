"""Which model versions a request may name: `/v2/models/{m}/versions/{v}/...` and gRPC `model_version`.

A runtime process serves one version of a model (the one it reports in metadata, responses and
metric labels). A request naming that version is served; any other version is a 404 / NOT_FOUND,
never silently answered by the version that happens to be loaded.
"""

from __future__ import annotations

from typing import Any

from kserve.errors import ModelNotFound
from kserve.model_repository import ModelRepository

from serving.model import SluiceModel


class VersionNotFound(ModelNotFound):
    def __init__(self, model_name: str, version: str, served: list[str]):
        super().__init__(model_name)
        have = f"this server serves version {', '.join(served)}" if served else "this model serves no named version"
        self.reason = f"model {model_name} has no version {version!r} here; {have}"


def served_versions(model: Any) -> list[str]:
    # Only a SluiceModel is one version; a model that routes between versions is not addressable by one.
    return [model.version] if isinstance(model, SluiceModel) else []


def check_version(registry: ModelRepository, model_name: str, version: str | None) -> None:
    """Raise ModelNotFound unless `model_name` is served and `version` (if given) is its version."""
    model = registry.get_model(model_name)
    if model is None:
        raise ModelNotFound(model_name)
    if version and version not in served_versions(model):
        raise VersionNotFound(model_name, version, served_versions(model))
