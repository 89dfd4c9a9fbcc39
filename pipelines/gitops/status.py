"""The CI-owned record of what serves: `gitops/models/<model>/status.yaml`.

People write `release.yaml` (what they want); CI writes `inferenceservice.yaml` (what the cluster
applies) and this record (what serves and why), in the same commit, so the three never disagree
after a CI commit. The record is what promotion and rollout read to know where a model stands: which
version holds the rolled-out revision, which one is the canary and at what share, when the current
traffic split began (the gates measure from there) and the last decision with its reason.

Phases, as the rendered manifest shows them:
  empty      nothing released yet (no manifest)
  stable     one revision serves 100% (no canaryTrafficPercent)
  canary     the new revision gets `canary.percent`% and the rolled-out one the rest
  rollback   the canary is at 0%: all traffic back on the rolled-out revision, the canary spec kept
  restoring  the stable spec is back in the manifest, still at 0% for the newest revision until its
             new Knative revision is ready; then the field is dropped and the phase is stable
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

STATUS_FILENAME = "status.yaml"
HEADER = (
    "# Written by sluice CI: what serves, and the last decision. Do not edit: change release.yaml\n"
    "# and push (pushes that edit this file are refused).\n"
)
Phase = Literal["empty", "stable", "canary", "rollback", "restoring"]
IN_ROLLOUT: tuple[str, ...] = ("canary", "rollback", "restoring")


class StatusError(ValueError):
    """A status record that cannot be read; the message names the file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Served(_Strict):
    """One model version behind one Knative revision."""

    version: str
    run_id: str = ""
    storage_uri: str
    revision: str = Field(description="digest of the manifest's revision template (manifest.revision_digest)")
    requested: str = Field(default="", description="what the release file asked for: 'version 2', 'alias champion'")


class Canary(Served):
    percent: int = Field(ge=0, le=100)
    forced: str | None = Field(default=None, description="why the evaluation gate was overridden, if it was")


class Decision(_Strict):
    action: str
    reason: str
    at: str


class Status(_Strict):
    model: str
    phase: Phase = "empty"
    stable: Served | None = None
    canary: Canary | None = None
    window_start: str | None = Field(default=None, description="when the current traffic split began (UTC)")
    decision: Decision | None = None

    @property
    def in_rollout(self) -> bool:
        return self.phase in IN_ROLLOUT

    def serves_only(self, version: str) -> bool:
        """At rest with `version` stable: what a person waiting on a release or a rollback waits for."""
        return self.phase == "stable" and self.stable is not None and self.stable.version == version

    def describe(self) -> str:
        s, c = self.stable, self.canary
        if self.phase == "empty" or s is None:
            return "nothing released yet"
        if self.phase == "stable" or c is None:
            return f"v{s.version} serves 100%"
        if self.phase == "canary":
            return f"v{c.version} canary at {c.percent}% (v{s.version} serves the rest)"
        if self.phase == "rollback":
            return f"v{c.version} rolled back to 0% (v{s.version} serves 100%; restoring its spec next)"
        return f"v{s.version} serves 100%; its restored spec waits to be ready before v{c.version} is dropped"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def empty(model: str) -> Status:
    return Status(model=model)


def parse_status(text: str | None, model: str, source: str) -> Status:
    """The record in `text` (None: no file yet, so nothing released)."""
    if text is None:
        return empty(model)
    try:
        data: Any = yaml.safe_load(text)
        status = Status.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        raise StatusError(f"{source}: not a valid status record: {exc}") from None
    if status.model != model:
        raise StatusError(f"{source}: records model {status.model!r}, expected {model!r}")
    return status


def dump_status(status: Status) -> str:
    body = yaml.safe_dump(status.model_dump(exclude_none=True), sort_keys=False, default_flow_style=False, width=4096)
    return HEADER + body
