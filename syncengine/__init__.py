"""syncengine: keeps a Tencent Exmail directory in step with the HR system, safely."""

from __future__ import annotations

__version__ = "0.1.0"
