"""What a release file asks of CI, given what serves: a pure function, so every rule is testable alone.

A change is anything that makes a new Knative revision: another version, or the same version with
other resources, replicas or runtime settings (`revision` is manifest.revision_digest of what the
release file would render at 100%). The rules, documented in docs/promotion.md:

  nothing serves                   -> release: straight to 100% (there is no rolled-out revision)
  stable, same revision            -> noop
  stable, another revision         -> canary at the first rollout step
  canary, same as the canary       -> noop (the rollout goes on)
  canary, same as the stable       -> abort: roll the canary back now (the person took the change back)
  any other edit during a rollout  -> wait: applied when the rollout ends (finalized or rolled back);
                                      the newest edit wins, nothing is dropped
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipelines.gitops.status import Served, Status

Action = Literal["release", "canary", "noop", "abort", "wait"]


@dataclass(frozen=True)
class Plan:
    action: Action
    reason: str


def _same(served: Served | None, version: str, revision: str) -> bool:
    return served is not None and served.version == version and served.revision == revision


def plan(status: Status, version: str, revision: str) -> Plan:
    """What to do about a release file that resolves to `version`, rendering revision `revision`."""
    stable, canary = status.stable, status.canary
    if status.phase == "empty" or stable is None:
        return Plan("release", f"first release of v{version}: nothing serves yet, so it goes straight to 100%")
    if status.phase == "stable":
        if _same(stable, version, revision):
            return Plan("noop", f"v{version} already serves 100% with these settings")
        what = f"v{version}" if version != stable.version else f"new settings for v{version}"
        return Plan("canary", f"{what} replaces v{stable.version}: a new revision, rolled out as a canary")
    if status.phase == "canary" and _same(canary, version, revision):
        return Plan("noop", f"v{version} is being rolled out ({status.describe()})")
    if status.phase == "canary" and _same(stable, version, revision):
        rolled = canary.version if canary else "?"
        return Plan("abort", f"the release file names the stable v{version} again: roll back v{rolled} now")
    return Plan(
        "wait",
        f"a rollout is in progress ({status.describe()}); v{version} is applied when it ends",
    )
