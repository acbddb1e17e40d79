"""How old the HR snapshot behind a plan is, said out loud.

``plan`` compares the *last ingested* snapshot with the live directory; it does not read the
HR source. After HR drops a new export, a ``plan`` without ``ingest`` (or ``--refresh``)
still shows the old data, and "No changes" would be a lie by omission. So every plan states
which snapshot it used, when it was ingested and how long ago, and warns when the export file
on disk is newer than the snapshot.

PURE: the instants come in as arguments; :func:`describe` only formats them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from syncengine.clock import shown


@dataclass(frozen=True)
class SnapshotAge:
    """The snapshot a plan used: its id, when it was ingested, when its data was exported,
    and (file sources) when the export file on disk was last modified."""

    snapshot_id: int
    ingested_at: datetime
    exported_at: datetime
    now: datetime
    source: str
    file_modified_at: datetime | None = None

    @property
    def age_seconds(self) -> float:
        return max(0.0, (self.now - self.ingested_at).total_seconds())

    @property
    def stale(self) -> bool:
        """The export file changed after the snapshot was read from it (1 s of slack for
        file systems that keep whole seconds)."""
        if self.file_modified_at is None:
            return False
        return (self.file_modified_at - self.exported_at).total_seconds() > 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "ingested_at": self.ingested_at.isoformat(),
            "exported_at": self.exported_at.isoformat(),
            "age_seconds": round(self.age_seconds),
            "source": self.source,
            "file_modified_at": self.file_modified_at.isoformat()
            if self.file_modified_at
            else None,
            "stale": self.stale,
        }


def _ago(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} min ago"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min ago"
    return f"{hours // 24} days ago"


def describe(age: SnapshotAge, tz: tzinfo) -> list[str]:
    """One line on the snapshot used, and a warning line when the export is newer."""
    lines = [
        f"HR snapshot #{age.snapshot_id} ({age.source}): ingested {shown(age.ingested_at, tz)}"
        f" ({_ago(age.age_seconds)}), exported {shown(age.exported_at, tz)}"
    ]
    if age.stale and age.file_modified_at is not None:
        lines.append(
            f"warning: the HR export changed at {shown(age.file_modified_at, tz)}, after this "
            "snapshot was read: this plan does not see those changes. Run 'syncengine plan "
            "--refresh' (or 'syncengine ingest' first)."
        )
    return lines
