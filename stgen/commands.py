"""Sub-commands beyond run/list/describe (predict, extract, convert); each adds its own parser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

REGISTERED: list[Callable[[Any], None]] = []
