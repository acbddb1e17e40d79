"""The message catalogues (gettext) of the reports and the plan page.

Apart from :mod:`syncengine.plan_page` so that a text report (``render.summary_line``, every
sync's headline) does not import the page's template engine (jinja2, about 30 ms).
"""

from __future__ import annotations

import functools
import gettext
from pathlib import Path

DOMAIN = "syncengine"
LOCALE_DIR = Path(__file__).with_name("locale")
LANGS = ("zh", "en")


@functools.lru_cache(maxsize=4)
def translations(lang: str) -> gettext.NullTranslations:
    """The catalogue of ``lang`` (English is the message ids themselves)."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r} (known: {', '.join(LANGS)})")
    return gettext.translation(DOMAIN, localedir=str(LOCALE_DIR), languages=[lang], fallback=True)
