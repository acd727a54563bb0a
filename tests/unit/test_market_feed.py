"""The prices topic's fan-out (streams.market): each price or rate becomes an input of every partition, stamped
with the prices topic's broker time; anything else on that topic is refused with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.inputs import command
from processors.messages import Transfer
from processors.wire import command_from_avro, command_to_avro
from schemas import CODEC, DecodeError
from streams.market import copies, price, rate, read_ticks


def decoded(value: bytes) -> dict[str, object]:
    name, record = CODEC.decode(value)
    assert name == "Command"
    cmd = command_from_avro(record)
    return {"id": cmd.id, "ts_ms": cmd.ts_ms, "kind": cmd.kind, **cmd.body}


def test_a_price_becomes_an_input_of_every_partition_priced_at_broker_time() -> None:
    value = CODEC.encode("Command", command_to_avro(price("BTC", "64250.5", 7)))
    out = copies(value, 1_750_000_000_123, 4)
    assert [p for p, _ in out] == [0, 1, 2, 3]
    got = [decoded(v) for _, v in out]
    assert [g["partition"] for g in got] == [0, 1, 2, 3]
    assert {g["priced_ms"] for g in got} == {1_750_000_000_123} and {g["price"] for g in got} == {"64250.5"}
    assert len({g["id"] for g in got}) == 4, "each copy is its partition's input"


def test_a_rate_is_copied_as_it_is() -> None:
    value = CODEC.encode("Command", command_to_avro(rate("USDT", "450", "1000", 1)))
    got = [decoded(v) for _, v in copies(value, 5, 2)]
    assert [(g["kind"], g["partition"], g["borrowed"], g["supplied"]) for g in got] == [
        ("BorrowRate", 0, "450", "1000"), ("BorrowRate", 1, "450", "1000")]


def test_anything_else_on_the_prices_topic_is_refused() -> None:
    transfer = command(Transfer, "t", "u", asset="USDT", amount="1", from_account="spot", to_account="margin")
    for value in (CODEC.encode("Command", command_to_avro(transfer)), b"not avro"):
        with pytest.raises(DecodeError):
            copies(value, 1, 4)


def test_a_price_file_reads_as_its_lines(tmp_path: Path) -> None:
    path = tmp_path / "path.csv"
    path.write_text("after_ms,asset,price\n0,BTC,60000\n# the fall\n500, BTC ,52000\n")
    assert [(t.after_ms, t.asset, t.price) for t in read_ticks(path)] == [(0, "BTC", "60000"), (500, "BTC", "52000")]
