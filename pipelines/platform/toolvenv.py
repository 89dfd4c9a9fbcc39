"""Virtualenvs of their own for tools whose pins clash with the project's (LocalStack, checkov).

Each lives under the state dir and is built with uv from an exact requirements list; a marker file
holds that list, so a second call is a no-op and a changed list rebuilds it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from pipelines.platform.processes import Echo, PlatformError, run


def uv_binary() -> str:
    """uv on PATH, else the binary of the `uv` package in this environment (a dev dependency: on a
    new machine `make setup` may have reached uv as `python3 -m uv`, with no script on PATH)."""
    uv = shutil.which("uv")
    if uv is not None:
        return uv
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        raise PlatformError("`uv` is not on PATH; install it (https://docs.astral.sh/uv/) and retry.") from None


def ensure_tool_venv(
    venv: Path, requirements: Sequence[str], *, label: str, took: str = "~10 s", echo: Echo = print
) -> Path:
    """Create or update `venv` so it holds exactly `requirements`; returns its python."""
    python = venv / "bin" / "python"
    marker = venv / ".sluice-requirements"
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    echo(f"{label}: installing into {venv} (once, {took})")
    uv = uv_binary()
    if not python.exists():
        run([uv, "venv", "-q", "-p", "3.11", str(venv)], what=f"creating {label}'s virtualenv")
    run([uv, "pip", "install", "-q", "--python", str(python), *requirements], what=f"installing {label}")
    marker.write_text(wanted)
    return python
