-- A result row is one input's answer, and an input is known by its source and id (processors.inputs),
-- not by its id alone: a user may send a command under the id of a coming deposit. The engine keeps
-- the two apart, but keyed by (user_id, id) ReplacingMergeTree kept only one of their two result rows.
-- Each kind has one source, so the kind names the source; ClickHouse can only extend a sorting key with
-- a column added in the same ALTER, and without a default, so the key column is a new `input_kind`
-- (the kind again) rather than `kind`. Rows landed before this migration have input_kind ''.
ALTER TABLE results
    ADD COLUMN IF NOT EXISTS input_kind LowCardinality(String)
        COMMENT 'the kind again, in the sorting key (names the source); empty on rows landed before 0005' AFTER kind,
    MODIFY ORDER BY (user_id, id, input_kind);

ALTER TABLE results_mv MODIFY QUERY
SELECT r.id AS id, fromUnixTimestamp64Milli(greatest(least(r.ts_ms, 10413791999999), -2208988800000), 'UTC') AS ts,
       r.ts_ms AS ts_ms, r.user_id AS user_id, r.kind AS kind, r.kind AS input_kind, r.status AS status,
       r.reason AS reason, r.detail AS detail, toUInt32(r.ledger_lines) AS ledger_lines, b.id AS batch_id
FROM result_batches_in AS b
ARRAY JOIN b.results AS r;
