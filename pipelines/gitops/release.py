"""The human-edited release file (`gitops/models/<model>/release.yaml`): schema, parser, write-back.

The release file says *what* should serve and *how carefully* to roll it out; CI turns it into the
rendered InferenceService (pipelines/gitops/manifest.py) and a status record
(pipelines/gitops/status.py). Validation happens here, before anything touches MLflow or Git, so a
typo fails fast with the file name and the offending field in the message. The same parser serves
the pre-receive check, CI and the local stand-in: there is no second reading of this file anywhere.

CI edits this file in two cases only: a write-back (`write_back_version`), when a version is rolled
back, sets it to the version that really serves, so it never names something that does not serve
and no later edit re-promotes the bad version by accident; and a retrain that beats the champion
names its new version (`set_version`), a release proposed through Git like a person's.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

RELEASE_FILENAME = "release.yaml"

# The model name becomes the InferenceService name and the Knative service prefix
# (`<name>-predictor-00001`), which must stay a DNS-1123 label under 63 characters.
_MODEL_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MODEL_NAME_MAX = 40
# MLflow aliases: letters, digits, `_` and `-`; MLflow itself rejects `latest` and `v<N>`.
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)
# Kubernetes resource quantities as people write them: 500m, 1, 0.5, 768Mi, 1Gi, 1G.
_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


class ReleaseError(ValueError):
    """A release file that cannot be used; the message names the file and every bad field."""


class _Strict(BaseModel):
    # extra="forbid": a misspelt key (`max_p95_latecy_ms`) must fail, not silently use a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rollout(_Strict):
    steps: list[int] = Field(
        default=[10, 50, 100], description="canary traffic percentages, strictly increasing, ending at 100"
    )

    @field_validator("steps")
    @classmethod
    def _check_steps(cls, steps: list[int]) -> list[int]:
        if not steps:
            raise ValueError("must list at least one step, e.g. [10, 50, 100]")
        bad = [s for s in steps if not 1 <= s <= 100]
        if bad:
            raise ValueError(f"each step is a traffic percentage in 1..100, got {bad}")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"must be strictly increasing, got {steps}")
        if steps[-1] != 100:
            raise ValueError(f"must end at 100 (full rollout), got {steps}")
        return steps


class Gates(_Strict):
    """Thresholds a canary must meet at every step; breaching any one rolls it back."""

    max_error_rate: float = Field(ge=0.0, le=1.0, description="fraction of canary requests that failed")
    max_p95_latency_ms: float = Field(gt=0.0, description="canary p95 latency in milliseconds")
    max_mean_relative_divergence: float = Field(
        ge=0.0,
        description="|mean canary - mean stable prediction| / |mean stable|; with mirror_percent, the mean "
        "|canary - stable| / |stable| of the same rows",
    )
    min_requests: int = Field(ge=1, description="canary requests needed before any decision (else hold)")
    max_realized_rmspe_ratio: float | None = Field(
        default=None,
        ge=0.0,
        description="business-metric gate: the canary's realized RMSPE may exceed the stable version's by at most "
        "this fraction (0.05: 5%) on the store-days `sluice feedback` scored for both; unset: no such gate. "
        "Applies only once actuals exist for both versions (Rossmann's arrive the next day)",
    )
    mirror_percent: int = Field(
        default=0,
        ge=0,
        le=100,
        description="share of the stable revision's requests also sent to the canary, so the divergence gate "
        "compares predictions on the same inputs (the local stand-in does this; Knative cannot mirror)",
    )


class Quantities(_Strict):
    cpu: str
    memory: str

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _check_quantity(cls, value: Any) -> str:
        text = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not _QUANTITY.match(text):
            raise ValueError(f"not a Kubernetes quantity (e.g. 500m, 1, 768Mi, 1Gi): {value!r}")
        return text


def _cores(cpu: str) -> float:
    """A CPU quantity (already checked against _QUANTITY) in cores: 500m -> 0.5, 2 -> 2."""
    return float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(re.sub(r"[A-Za-z]+$", "", cpu))


class Resources(_Strict):
    # Starting point for the Sluice runtime; the serving benchmarks refine it.
    requests: Quantities = Quantities(cpu="500m", memory="768Mi")
    limits: Quantities = Quantities(cpu="1", memory="1Gi")


class Release(_Strict):
    model: str = Field(description="registered model name in MLflow; also the InferenceService name")
    version: str | None = Field(default=None, description="registered model version to release")
    alias: str | None = Field(default=None, description="registered model alias to release, e.g. champion")
    rollout: Rollout = Rollout()
    gates: Gates
    resources: Resources = Resources()
    # Not 0: the rollout gates need a serving pod with counters at every step, and scale to zero
    # would wipe them (and answer the first request after a cold start, failing the latency gate).
    min_replicas: int = Field(default=1, ge=1, description="pods kept per revision (at least 1)")
    max_replicas: int = Field(default=3, ge=1)
    # Runtime processes per pod (`python -m serving --workers`): one per core of the CPU limit.
    workers: int = Field(default=1, ge=1, le=16, description="runtime processes per pod, one per core")

    @field_validator("model")
    @classmethod
    def _check_model(cls, name: str) -> str:
        if len(name) > _MODEL_NAME_MAX or not _MODEL_NAME.match(name):
            raise ValueError(
                f"must be a lowercase DNS label of at most {_MODEL_NAME_MAX} characters (a-z, 0-9, '-'), got {name!r}"
            )
        return name

    @field_validator("version", mode="before")
    @classmethod
    def _check_version(cls, value: Any) -> Any:
        # YAML reads `version: 3` as an int; MLflow versions are decimal strings.
        if isinstance(value, bool):
            raise ValueError("must be a version number like 3, not a boolean")
        if isinstance(value, int):
            value = str(value)
        if isinstance(value, str) and not (value.isdigit() and int(value) >= 1):
            raise ValueError(f"must be a positive integer version number, got {value!r}")
        return value

    @field_validator("alias")
    @classmethod
    def _check_alias(cls, alias: str | None) -> str | None:
        if alias is not None and (not _ALIAS.match(alias) or _RESERVED_ALIAS.match(alias)):
            raise ValueError(f"not a usable MLflow alias (letters, digits, _ and -; not 'latest' or v<N>): {alias!r}")
        return alias

    @model_validator(mode="after")
    def _check_selector(self) -> Release:
        if self.version is not None and self.alias is not None:
            raise ValueError("set one of 'version' or 'alias', not both")
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        cores = _cores(self.resources.limits.cpu)
        if self.workers > max(1, math.ceil(cores)):
            raise ValueError(
                f"workers ({self.workers}) exceed the CPU limit ({self.resources.limits.cpu}): each worker uses "
                f"about one core; raise resources.limits.cpu to {self.workers} or lower workers"
            )
        return self

    @property
    def released(self) -> bool:
        """False while the file names neither a version nor an alias (nothing is to serve yet)."""
        return self.version is not None or self.alias is not None

    @property
    def ref(self) -> str:
        """The version number or alias the file asks for ('' when nothing is released)."""
        return self.version or self.alias or ""

    @property
    def requested(self) -> str:
        """How a person would say what the file asks for: 'version 3', 'alias champion', 'nothing'."""
        if self.version:
            return f"version {self.version}"
        return f"alias {self.alias}" if self.alias else "nothing"


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(file)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (misspelt?)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def parse_release(data: Any, source: str = "<release>") -> Release:
    """Validate already-parsed YAML; raise ReleaseError listing every problem."""
    if not isinstance(data, dict):
        raise ReleaseError(f"{source}: expected a mapping of release fields, got {type(data).__name__}")
    try:
        return Release.model_validate(data)
    except ValidationError as err:
        raise ReleaseError(f"{source}: invalid release file:\n{_format_errors(err)}") from None


def parse_release_text(text: str, path: str) -> Release:
    """Validate a release file's text; `path` (as in the repository) names it in errors, and its
    folder must be named after the model it releases."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ReleaseError(f"{path}: not valid YAML: {err}") from None
    release = parse_release(data, path)
    folder = Path(path)
    # A copied folder with a stale `model:` would otherwise overwrite another model's manifest.
    if folder.name == RELEASE_FILENAME and folder.parent.name not in ("", release.model):
        raise ReleaseError(
            f"{path}: model {release.model!r} does not match its folder {folder.parent.name!r}; "
            f"release files live at gitops/models/<model>/{RELEASE_FILENAME}"
        )
    return release


def load_release(path: str | Path) -> Release:
    """Read and validate a release file from disk."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReleaseError(f"{path}: no such release file") from None
    return parse_release_text(text, str(path))


_SELECTOR_LINE = re.compile(r"^(version|alias)\s*:.*$", re.MULTILINE)


def write_back_version(text: str, version: str, why: str, path: str = RELEASE_FILENAME) -> str:
    """The release file's text naming the version that serves again, with a comment saying why."""
    return set_version(text, version, f"written back by sluice CI: {why}", path)


def set_version(text: str, version: str, comment: str, path: str = RELEASE_FILENAME) -> str:
    """The release file's text with `version: <version>  # <comment>` in place of its version or
    alias line. Comments and layout are kept. The result is parsed again and must differ from the
    original only in the version, or ReleaseError says so."""
    before = parse_release_text(text, path)
    note = " ".join(comment.split())[:220]
    line = f"version: {int(version)}  # {note}"
    if _SELECTOR_LINE.search(text):
        new_text = _SELECTOR_LINE.sub(lambda _: line, text, count=1)
    else:
        lines = text.splitlines()
        at = next((i + 1 for i, ln in enumerate(lines) if ln.startswith("model:")), len(lines))
        new_text = "\n".join([*lines[:at], line, *lines[at:]]) + "\n"
    after = parse_release_text(new_text, path)
    expected = before.model_copy(update={"version": str(int(version)), "alias": None})
    if after != expected:
        raise ReleaseError(f"{path}: cannot write back version {version} without changing other fields")
    return new_text
