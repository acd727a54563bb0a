-- The audit ledger: one row per ledger line. ReplacingMergeTree on the line's deterministic id (in the
-- sorting key), read with FINAL, so a line delivered twice is counted once; the insert token drops a
-- retried batch before it is even written.
CREATE TABLE IF NOT EXISTS ledger_lines
(
    id             String COMMENT 'owner/input-id/line-no, deterministic',
    entry          String COMMENT 'owner/input-id: the double-entry entry the line belongs to',
    entry_id       String COMMENT 'the input id',
    entry_type     LowCardinality(String),
    line_no        UInt16,
    ts             DateTime64(3, 'UTC') COMMENT 'time of the input',
    user_id        String COMMENT 'empty for system accounts',
    account        LowCardinality(String) COMMENT 'sub-account, or sys:<name>',
    bucket         LowCardinality(String) COMMENT 'available, frozen, borrowed; balance for system accounts',
    asset          LowCardinality(String),
    amount         Decimal(76, 18) COMMENT 'signed, major units; + adds to what the account holds',
    balance_before Nullable(Decimal(76, 18)),
    balance_after  Nullable(Decimal(76, 18)),
    seq            UInt64 COMMENT 'per-user ledger sequence',
    batch_id       String COMMENT 'the LedgerBatch record it came in',
    landed_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (user_id, account, asset, bucket, id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Landing table in the shape of posflow.LedgerBatch: the sink inserts Avro files here, and the
-- materialized view below turns each batch into its lines. Null engine: nothing is kept.
CREATE TABLE IF NOT EXISTS ledger_batches_in
(
    id             String,
    ts_ms          Int64,
    schema_version Int32,
    lines Array(Tuple(
        id String, ts_ms Int64, schema_version Int32, entry_id String, entry_type String, line_no Int32,
        user_id String, account String, bucket String, asset String, amount String,
        balance_before Nullable(String), balance_after Nullable(String), seq Int64))
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS ledger_lines_mv TO ledger_lines AS
SELECT
    l.id AS id,
    substring(l.id, 1, length(l.id) - position(reverse(l.id), '/')) AS entry,
    l.entry_id AS entry_id,
    l.entry_type AS entry_type,
    toUInt16(l.line_no) AS line_no,
    fromUnixTimestamp64Milli(l.ts_ms, 'UTC') AS ts,
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
