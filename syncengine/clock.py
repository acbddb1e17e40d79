"""The company's calendar: one time zone for every date decision, UTC for everything stored.

Exmail is a Chinese service and most companies using it run on Beijing time, while the
servers that run syncengine often run on UTC. A date decision made on the host's (or UTC's)
calendar is a day late for eight hours of every night: at 01:47 in Shanghai on 1 December a
leaver whose last day is 1 December is still "active" on UTC's 30 November. So every date
decision (leave dates, start windows, grace periods, report names, schedules) uses the
company's calendar day, taken from ``[general] timezone`` (default ``Asia/Shanghai``) or the
``SYNCENGINE_TZ`` environment variable (which wins, like ``TZ`` does for a process); times
are stored in UTC and shown to people in the company's zone with their offset.

PURE: the instant always comes in as an argument (the engine's clock is ``Engine.now``).
``tzdata`` is a dependency so that zone names resolve on hosts without a system zone database
(slim containers, Windows).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "Asia/Shanghai"
TZ_ENV = "SYNCENGINE_TZ"


def zone(name: str) -> ZoneInfo:
    """The IANA zone called ``name``; ValueError naming it when there is none."""
    text = name.strip()
    if not text:
        raise ValueError("is empty: give an IANA time zone name such as 'Asia/Shanghai'")
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {text!r}: give an IANA name such as 'Asia/Shanghai' or 'UTC'"
        ) from None


def local(when: datetime, tz: tzinfo) -> datetime:
    """``when`` (an aware instant; a naive one is taken as UTC) on the company's clock."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(tz)


def company_today(now: datetime, tz: tzinfo) -> date:
    """The company's calendar day at the instant ``now``."""
    return local(now, tz).date()


def shown(when: datetime | None, tz: tzinfo, *, timespec: str = "seconds") -> str:
    """A time for people: in the company's zone, with its offset (``2026-12-01 01:47:00+08:00``).
    ``None`` is shown as ``-``."""
    if when is None:
        return "-"
    return local(when, tz).isoformat(sep=" ", timespec=timespec)
