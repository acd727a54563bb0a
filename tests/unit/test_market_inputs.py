"""Mark prices and pool rates reach a partition as its own system inputs (processors.batch): the partition's
market is stored in the users table with the step that wrote it and the market as that step found it, so a
step interrupted after the store and re-applied from its journal starts from where it started the first time."""

from __future__ import annotations

import json

from processors.batch import BatchProcessor, Source, Step, market_key
from processors.inputs import command
from processors.margin import parse_price
from processors.market import Market
from processors.messages import BorrowRate, Command, MarkPrice
from processors.rates import HOUR_MS
from schemas import CODEC
from tests.unit.test_batch import PARTITIONS, SOURCES, encoded
from tests.unit.test_clock_tick import CFG, SYSTEM, T0, P, Partition, Store

DEAD = "DeadLetter"


def price(ts_ms: int, asset: str, text: str, partition: int = P,
          priced_ms: int | None = None) -> tuple[str, int, Command]:
    return SYSTEM, ts_ms, command(MarkPrice, f"price/{asset}/{ts_ms}", "", partition=partition, asset=asset,
                                  price=text, priced_ms=ts_ms if priced_ms is None else priced_ms)


def rate(ts_ms: int, asset: str, borrowed: str, supplied: str) -> tuple[str, int, Command]:
    return SYSTEM, ts_ms, command(BorrowRate, f"rate/{asset}/{ts_ms}", "", partition=P, asset=asset,
                                  borrowed=borrowed, supplied=supplied)


def market(store: Store) -> Market:
    raw = store.data.get(market_key(P))
    return Market.from_doc(json.loads(raw)["now"]) if raw is not None else Market()


def dead_letters(step: Step) -> list[str]:
    return [CODEC.decode(value)[1]["error"] for topic, _, value, _ in step.records if CODEC.decode(value)[0] == DEAD]


def test_a_price_is_in_force_for_the_partition_from_its_input_on() -> None:
    part = Partition()
    assert dead_letters(part.step(price(T0, "BTC", "64250.5", priced_ms=T0 - 2_000))) == []
    assert market(part.store).price("BTC", T0, CFG.price_max_age_ms) == parse_price("64250.5")
    assert market(part.store).price("BTC", T0 - 2_000 + CFG.price_max_age_ms + 1, CFG.price_max_age_ms) is None
    part.step(price(T0 + 1_000, "BTC", "63000"))
    assert market(part.store).prices["BTC"] == (parse_price("63000"), T0 + 1_000)
    # a time from the future on the prices topic is taken as now: a price never looks fresher than it is
    part.step(price(T0 + 2_000, "ETH", "3000", priced_ms=T0 + 10**9))
    assert market(part.store).prices["ETH"] == (parse_price("3000"), T0 + 2_000)


def test_bad_system_inputs_go_to_the_dead_letter_topic_and_change_nothing() -> None:
    part = Partition()
    part.step(price(T0, "BTC", "64000"))
    before = part.store.data[market_key(P)]
    errors = dead_letters(part.step(
        price(T0 + 1, "BTC", "-1"), price(T0 + 2, "BTC", "1e5"), price(T0 + 3, "DOGE", "1"),
        price(T0 + 4, "USDT", "1"), price(T0 + 5, "BTC", "65000", partition=P + 1),
        rate(T0 + 6, "DOGE", "1", "2"), rate(T0 + 7, "USDT", "x", "2"),
    ))
    assert [e.split(":")[0] for e in errors] == ["BAD_PRICE", "BAD_PRICE", "UNKNOWN_ASSET", "UNKNOWN_ASSET",
                                                 "WRONG_PARTITION", "UNKNOWN_ASSET", "BAD_AMOUNT"]
    assert part.store.data[market_key(P)] == before


def test_a_pool_rate_follows_utilization_and_charges_by_the_hour() -> None:
    part = Partition()
    part.step(rate(T0, "USDT", "450", "1000"))  # 45%: half the kink at 90%, so 2% a year
    hourly = CFG.rate_models["USDT"].hourly(450, 1000)
    assert market(part.store).rates == {"USDT": hourly}
    part.step(rate(T0 + 3 * HOUR_MS, "USDT", "950", "1000"))  # three hours at 2% first
    assert market(part.store).index == {"USDT": 3 * hourly}
    assert market(part.store).rates["USDT"] > hourly


def test_a_re_applied_step_starts_from_the_market_it_found() -> None:
    """The step stored its market and was interrupted before its progress: re-applied over the same records,
    it starts from the market before it (the prior), and ends where the first attempt ended."""
    store = Store()
    processor = BatchProcessor(CFG, PARTITIONS, {**SOURCES, SYSTEM: "system"})

    def run(first_offset: int, *inputs: tuple[str, int, Command]) -> Step:
        sources = [(Source(topic, P, first_offset + n, None, ts), encoded(cmd))
                   for n, (topic, ts, cmd) in enumerate(inputs)]
        step = processor.run(sources, store.load, store.recall, store.scan)
        store.commit(step)
        return step

    run(0, price(T0, "BTC", "100"))
    step = run(1, price(T0 + 1, "BTC", "200"), price(T0 + 2, "BTC", "300"))
    assert step.market_priors[P]["prices"] == {"BTC": [parse_price("100"), T0]}
    again = run(1, price(T0 + 1, "BTC", "200"), price(T0 + 2, "BTC", "300"))  # the same records, re-applied
    assert again.market_priors[P]["prices"] == {"BTC": [parse_price("100"), T0]}, "not the market it stored"
    assert market(store).prices["BTC"] == (parse_price("300"), T0 + 2)
    later = run(3, price(T0 + 3, "ETH", "5"))  # the next step starts from the stored market
    assert later.market_priors[P]["prices"] == {"BTC": [parse_price("300"), T0 + 2]}
