"""Do the release file, the rendered manifest, the status record and the registry's aliases agree?

Asserted by the tests after every CI commit, and shown by `sluice status`: the promise that Git
always says what serves, checked rather than hoped for.
"""

from __future__ import annotations

from pipelines.gitops.manifest import canary_percent, manifest_version, revision_digest
from pipelines.gitops.state import ModelState
from pipelines.registry import CHAMPION


def disagreements(state: ModelState, aliases: dict[str, str] | None) -> list[str]:
    """Every way the four records contradict each other (empty: they agree)."""
    out: list[str] = []
    st, doc, release = state.status, state.manifest, state.release
    name = state.model
    if st.phase == "empty":
        if doc is not None:
            out.append(f"{name}: a manifest exists but the status record says nothing is released")
        return out
    if doc is None:
        return [f"{name}: status says {st.describe()} but there is no manifest"]
    stable, canary = st.stable, st.canary
    if stable is None:
        return [f"{name}: status phase {st.phase} without a stable version"]
    pct = canary_percent(doc)
    named = manifest_version(doc)
    digest = revision_digest(doc)
    if st.phase == "stable":
        if pct is not None:
            out.append(f"{name}: stable, but the manifest sets canaryTrafficPercent {pct}")
        if named != stable.version or digest != stable.revision:
            out.append(
                f"{name}: the manifest serves v{named} ({digest}), status says v{stable.version} ({stable.revision})"
            )
    elif canary is None:
        out.append(f"{name}: phase {st.phase} without a canary record")
    elif st.phase in ("canary", "rollback"):
        if named != canary.version or digest != canary.revision:
            out.append(
                f"{name}: the manifest names v{named} ({digest}), the canary is v{canary.version} ({canary.revision})"
            )
        if pct != canary.percent:
            out.append(f"{name}: manifest at {pct}%, status says the canary is at {canary.percent}%")
    elif st.phase == "restoring" and (named != stable.version or digest != stable.revision or pct != 0):
        out.append(f"{name}: restoring v{stable.version} at 0%, but the manifest names v{named} at {pct}%")
    rolling_back = st.phase in ("rollback", "restoring") and canary is not None
    if release is not None and rolling_back and canary is not None and release.version == canary.version:
        out.append(f"{name}: release.yaml still names the rolled-back v{canary.version}")
    if aliases is not None and (release is None or release.alias is None):
        champion = aliases.get(CHAMPION)
        if champion != stable.version:
            out.append(f"{name}: alias {CHAMPION} is v{champion}, but v{stable.version} holds the rolled-out revision")
    return out
