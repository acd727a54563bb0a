-- Client timestamps are whatever the client sent (any Avro long: year 1, 9999, negative, 2**62).
-- `ts` holds it clamped into ClickHouse's DateTime64 range, 1900-01-01 00:00:00.000 .. 2299-12-31
-- 23:59:59.999 UTC (the range every server version documents), so no conversion can fail or wrap and
-- partitions by month stay bounded; `ts_ms` keeps the value as sent, for the audit. The bounds are
-- sinks.store.TS_MIN_MS / TS_MAX_MS, which the sink uses for the chain_events rows it builds itself.
-- Rows landed before this migration read their ts_ms from ts (they were in range: they landed).
ALTER TABLE ledger_lines ADD COLUMN IF NOT EXISTS ts_ms Int64 DEFAULT toUnixTimestamp64Milli(ts)
    COMMENT 'time of the input as the client sent it, ms since the epoch; ts is this clamped' AFTER ts;
ALTER TABLE results ADD COLUMN IF NOT EXISTS ts_ms Int64 DEFAULT toUnixTimestamp64Milli(ts)
    COMMENT 'as the client sent it; ts is this clamped' AFTER ts;
ALTER TABLE withdrawals_to_sign ADD COLUMN IF NOT EXISTS ts_ms Int64 DEFAULT toUnixTimestamp64Milli(ts)
    COMMENT 'as the client sent it; ts is this clamped' AFTER ts;
ALTER TABLE chain_events ADD COLUMN IF NOT EXISTS ts_ms Int64 DEFAULT toUnixTimestamp64Milli(ts)
    COMMENT 'as the client sent it; ts is this clamped' AFTER ts;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS ts_ms Int64 DEFAULT toUnixTimestamp64Milli(ts)
    COMMENT 'as written (a Kafka record time, which a producer may set); ts is this clamped' AFTER ts;

-- The views again, with the clamp and ts_ms. MODIFY QUERY swaps a view's query in one step, so no
-- insert (a sink still running while another command applies this) lands in a Null table while no view
-- reads it. Its one cost: the view's insert tokens come out different once the view is reloaded, so a
-- batch retried across the first restart after this migration may be written twice; FINAL counts it once.
ALTER TABLE ledger_lines_mv MODIFY QUERY
SELECT
    l.id AS id,
    substring(l.id, 1, length(l.id) - position(reverse(l.id), '/')) AS entry,
    l.entry_id AS entry_id,
    l.entry_type AS entry_type,
    toUInt16(l.line_no) AS line_no,
    fromUnixTimestamp64Milli(greatest(least(l.ts_ms, 10413791999999), -2208988800000), 'UTC') AS ts,
    l.ts_ms AS ts_ms,
    l.user_id AS user_id,
    l.account AS account,
    l.bucket AS bucket,
    l.asset AS asset,
    toDecimal256(l.amount, 18) AS amount,
    if(isNull(l.balance_before), NULL, toDecimal256(assumeNotNull(l.balance_before), 18)) AS balance_before,
    if(isNull(l.balance_after), NULL, toDecimal256(assumeNotNull(l.balance_after), 18)) AS balance_after,
    toUInt64(l.seq) AS seq,
    b.id AS batch_id
FROM ledger_batches_in AS b
ARRAY JOIN b.lines AS l;

ALTER TABLE results_mv MODIFY QUERY
SELECT r.id AS id, fromUnixTimestamp64Milli(greatest(least(r.ts_ms, 10413791999999), -2208988800000), 'UTC') AS ts,
       r.ts_ms AS ts_ms, r.user_id AS user_id, r.kind AS kind, r.status AS status, r.reason AS reason,
       r.detail AS detail, toUInt32(r.ledger_lines) AS ledger_lines, b.id AS batch_id
FROM result_batches_in AS b
ARRAY JOIN b.results AS r;

ALTER TABLE withdrawals_to_sign_mv MODIFY QUERY
SELECT id, fromUnixTimestamp64Milli(greatest(least(ts_ms, 10413791999999), -2208988800000), 'UTC') AS ts, ts_ms,
       user_id, chain, asset, toDecimal256(amount, 18) AS amount, address
FROM withdrawals_to_sign_in;

ALTER TABLE dead_letters_mv MODIFY QUERY
SELECT id, fromUnixTimestamp64Milli(greatest(least(ts_ms, 10413791999999), -2208988800000), 'UTC') AS ts, ts_ms,
       source_topic, source_partition, source_offset, key, value, error
FROM dead_letters_in;
