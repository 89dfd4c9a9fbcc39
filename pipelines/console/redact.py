"""Keep credentials off the page: URLs lose their user and password wherever they appear."""

from __future__ import annotations

import re
from typing import Any

from markupsafe import Markup

_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def redact_url(text: str) -> str:
    """`text` with the user and password taken out of every URL in it (a token in a clone URL or a
    tracking URI must never reach a page, error messages that quote the URL included)."""
    return _USERINFO.sub(r"\1", text)


def finalize(value: Any) -> Any:
    """Jinja's `finalize` hook: every `{{ ... }}` output goes through here before escaping, so a URL
    with credentials in any field or message is redacted even where a panel forgot to."""
    if isinstance(value, Markup):
        return Markup(redact_url(str(value)))
    if isinstance(value, str):
        return redact_url(value)
    return value
