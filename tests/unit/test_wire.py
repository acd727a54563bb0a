"""The step's batch encoders write exactly what the schema-driven codec writes for the same values."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.config import default_config
from processors.messages import LedgerLine, Result
from processors.wire import SCHEMA_VERSION, ledger_batch_body, line_to_avro, result_batch_body, result_to_avro
from schemas import CODEC

CFG = default_config()
text = st.text(max_size=80)  # past 63 UTF-8 bytes the length takes two varint bytes
longs = st.integers(-(2**63), 2**63 - 1)
minor = st.integers(-(10**38) + 1, 10**38 - 1)
user_line = st.builds(
    LedgerLine, text, longs, text, text, st.integers(0, 2**31 - 1), text, text,
    st.sampled_from(["available", "frozen", "borrowed"]), st.sampled_from(sorted(CFG.assets)), minor, minor, minor,
    longs,
)
system_line = st.builds(
    LedgerLine, text, longs, text, text, st.integers(0, 200), st.just(""), text, st.just("balance"),
    st.sampled_from(sorted(CFG.assets)), minor, st.none(), st.none(), longs,
)
results = st.builds(Result, text, longs, text, text, st.sampled_from(["ACCEPTED", "REJECTED"]),
                    st.none() | text, text, st.integers(0, 2**31 - 1))


@settings(max_examples=300)
@given(batch_id=text, ts_ms=longs, lines=st.lists(user_line | system_line, max_size=70))
def test_ledger_batch_bytes(batch_id: str, ts_ms: int, lines: list[LedgerLine]) -> None:
    record = {"id": batch_id, "ts_ms": ts_ms, "schema_version": SCHEMA_VERSION,
              "lines": [line_to_avro(line, CFG) for line in lines]}
    assert CODEC.header("LedgerBatch") + ledger_batch_body(batch_id, ts_ms, lines, CFG) == \
        CODEC.encode("LedgerBatch", record)


@settings(max_examples=300)
@given(batch_id=text, ts_ms=longs, batch=st.lists(results, max_size=70))
def test_result_batch_bytes(batch_id: str, ts_ms: int, batch: list[Result]) -> None:
    record = {"id": batch_id, "ts_ms": ts_ms, "schema_version": SCHEMA_VERSION,
              "results": [result_to_avro(r) for r in batch]}
    assert CODEC.header("ResultBatch") + result_batch_body(batch_id, ts_ms, batch) == \
        CODEC.encode("ResultBatch", record)

