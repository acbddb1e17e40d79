"""The use-cases of the engine, and the one place that wires adapters together.

The CLI, the hook receiver and the benchmarks call these functions; nothing else builds a
provider, a connector or a database session from the configuration.
"""

from __future__ import annotations
