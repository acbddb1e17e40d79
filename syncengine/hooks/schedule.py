"""A five-field cron expression (``minute hour day-of-month month day-of-week``) and its next
firing time, for running the nightly sync inside ``syncengine serve``.

Written here rather than taken from a library because the need is small and exact: numbers,
``*``, ranges ``a-b``, steps ``*/n`` and ``a-b/n``, lists ``a,b``, and the classic rule that
when both day fields are restricted a day matching either one fires. Pure: time comes in as
an argument and the answer is computed, not slept for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 7))  # fmt: skip
MAX_DAYS_AHEAD = 366 * 5  # 29 February on a Monday needs years; beyond this nothing fires


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if base == "*":
                start, end = low, high
            elif "-" in base:
                a, b = base.split("-", 1)
                start, end = int(a), int(b)
            else:
                start = end = int(base)
                if step_text:
                    end = high
        except ValueError:
            raise ValueError(f"cron {name} field {text!r}: {part!r} is not a number, "
                             "range, step or *") from None  # fmt: skip
        if step < 1 or not (low <= start <= high and low <= end <= high) or start > end:
            raise ValueError(f"cron {name} field {text!r}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron expression; :meth:`next_after` gives the next firing minute."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday (7 is folded into 0)
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        parts = expression.split()
        if len(parts) != 5:
            raise ValueError(f"cron expression {expression!r} needs 5 fields (minute hour "
                             f"day-of-month month day-of-week), not {len(parts)}")  # fmt: skip
        sets = [_field(p, n, lo, hi) for p, (n, lo, hi) in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(0 if d == 7 else d for d in sets[4])
        return cls(expression, sets[0], sets[1], sets[2], sets[3], weekdays,
                   any_day=parts[2] == "*", any_weekday=parts[4] == "*")  # fmt: skip

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return dow
        if self.any_weekday:
            return dom
        return dom or dow

    def next_after(self, now: datetime) -> datetime | None:
        """The first firing time strictly after ``now`` (same time zone), or None if the
        expression never fires (31 February)."""
        start = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        for offset in range(MAX_DAYS_AHEAD):
            current = day + timedelta(days=offset)
            if not self._day_matches(current):
                continue
            for hour in sorted(self.hours):
                for minute in sorted(self.minutes):
                    candidate = current.replace(hour=hour, minute=minute)
                    if candidate >= start:
                        return candidate
        return None
