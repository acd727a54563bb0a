"""Mark prices and pool rates: the source that publishes them, and the fan-out that copies each to every
partition of the engine (DESIGN §1a).

A price source (an oracle, an index of exchanges; here a script or a file, `posflow price`, `posflow prices`)
publishes `MarkPrice` and `BorrowRate` inputs to the prices topic, keyed by what they price (compacted: the
latest per key stays). The fan-out (an agent of every worker, processors.agents) copies each record to every
partition of the system-inputs topic, naming the partition in the body and, for a price, the prices topic's
broker time as `priced_ms` (both topics stamp LogAppendTime): the engine takes a price's age from when the
exchange received it, never from the source's clock. On the system-inputs topic a copy is an input of its
partition like a clock tick, so the journal fixes which price each input of a step saw.

The fan-out delivers at least once (a crash between its writes and its commit copies a record again): a price
or a rate applied twice leaves the market as once.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from processors.inputs import command
from processors.messages import BorrowRate, Command, MarkPrice
from processors.wire import command_from_avro, command_to_avro
from schemas import CODEC, DecodeError
from streams.config import Settings
from streams.kafka import producer_config
from streams.topics import PRICES

FANNED_OUT = frozenset({"MarkPrice", "BorrowRate"})
ANY_PARTITION = -1  # the partition a source names: the fan-out sets each copy's


def price(asset: str, text: str, seq: int) -> Command:
    """`text` units of the valuation asset per whole `asset`, as a source publishes it."""
    return command(MarkPrice, f"price/{asset}/{seq}", "", partition=ANY_PARTITION, asset=asset, price=text,
                   priced_ms=0)


def rate(asset: str, borrowed: str, supplied: str, seq: int) -> Command:
    """The asset's pool exchange-wide: lent out, and held to lend (decimal text at the asset's scale)."""
    return command(BorrowRate, f"rate/{asset}/{seq}", "", partition=ANY_PARTITION, asset=asset, borrowed=borrowed,
                   supplied=supplied)


def copies(value: bytes, broker_ms: int, partitions: int) -> list[tuple[int, bytes]]:
    """(partition, record) for each partition of the system-inputs topic: `value` (a Command of a fanned-out
    kind from the prices topic, stamped `broker_ms`) made that partition's input. Raises DecodeError when it
    is not one."""
    name, record = CODEC.decode(value)
    if name != "Command":
        raise DecodeError("WRONG_MESSAGE_TYPE", f"{name} on the prices topic: a Command of {sorted(FANNED_OUT)}")
    cmd = command_from_avro(record)
    if cmd.kind not in FANNED_OUT:
        raise DecodeError("WRONG_MESSAGE_TYPE", f"a {cmd.kind} on the prices topic: {sorted(FANNED_OUT)} only")
    out = []
    for p in range(partitions):
        body: dict[str, Any] = {**cmd.body, "partition": p}
        if cmd.kind == "MarkPrice":
            body["priced_ms"] = broker_ms
        copy = cmd._replace(id=f"{cmd.id}/p{p}", ts_ms=broker_ms, body=body)
        out.append((p, CODEC.encode("Command", command_to_avro(copy))))
    return out


@dataclass(frozen=True)
class Tick:
    """One line of a price file: after `after_ms` since the previous line, publish `price` for `asset`."""

    after_ms: int
    asset: str
    price: str


def read_ticks(path: Path) -> list[Tick]:
    """A CSV file of `after_ms,asset,price` lines (a header line is skipped)."""
    ticks = []
    with path.open(newline="") as f:
        for row in csv.reader(f):
            if not row or row[0].strip().startswith("#") or row[0].strip() == "after_ms":
                continue
            after, asset, text = (cell.strip() for cell in row)
            ticks.append(Tick(int(after), asset, text))
    return ticks


class MarketFeed:
    """Publishes prices and rates to the prices topic, keyed by what they price."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer = Producer(producer_config(settings))
        self._seq = time.time_ns()  # ids unique across runs of a source

    def _publish(self, key: str, cmd: Command) -> None:
        self._producer.produce(PRICES.name(self.settings), CODEC.encode("Command", command_to_avro(cmd)),
                               key.encode())
        self._producer.poll(0)

    def price(self, asset: str, text: str) -> None:
        self._seq += 1
        self._publish(f"price:{asset}", price(asset, text, self._seq))

    def rate(self, asset: str, borrowed: str, supplied: str) -> None:
        self._seq += 1
        self._publish(f"rate:{asset}", rate(asset, borrowed, supplied, self._seq))

    def play(self, ticks: Iterable[Tick]) -> int:
        """Publish each tick after its delay; the number published."""
        n = 0
        for tick in ticks:
            if tick.after_ms:
                self._producer.flush(10)
                time.sleep(tick.after_ms / 1000)
            self.price(tick.asset, tick.price)
            n += 1
        return n

    def flush(self, timeout: float = 30.0) -> None:
        left = self._producer.flush(timeout)
        if left:
            raise TimeoutError(f"{left} price records not acknowledged in {timeout}s: is the broker up?")
