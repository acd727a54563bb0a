"""What a handler returns when it accepts an input."""

from __future__ import annotations

from typing import NamedTuple

from processors.messages import Event, LedgerLine
from processors.reasons import Reason


class Applied(NamedTuple):
    lines: tuple[LedgerLine, ...] = ()
    events: tuple[Event, ...] = ()
    flag: Reason | None = None  # accepted, but worth a look (e.g. BELOW_MINIMUM deposit)
    detail: str = ""
