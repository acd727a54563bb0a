"""What a handler returns when it accepts an input."""

from __future__ import annotations

from processors.messages import Event, LedgerLine
from processors.reasons import Reason


class Applied:
    """A plain class, not a NamedTuple: compiled, it is built without a Python-level call."""

    __slots__ = ("detail", "events", "flag", "lines")

    def __init__(self, lines: tuple[LedgerLine, ...] = (), events: tuple[Event, ...] = (),
                 flag: Reason | None = None, detail: str = "") -> None:
        self.lines = lines
        self.events = events
        self.flag = flag  # accepted, but worth a look (e.g. BELOW_MINIMUM deposit)
        self.detail = detail
