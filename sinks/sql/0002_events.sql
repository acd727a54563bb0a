-- Results of every input, approved withdrawals, chain events (deposits and withdrawals as the chain
-- watcher saw them) and dead letters. Same pattern as the ledger: deterministic ids, insert tokens,
-- ReplacingMergeTree read with FINAL.
CREATE TABLE IF NOT EXISTS results
(
    id           String COMMENT 'the input id',
    ts           DateTime64(3, 'UTC'),
    user_id      String,
    kind         LowCardinality(String),
    status       LowCardinality(String),
    reason       Nullable(String),
    detail       String,
    ledger_lines UInt32,
    batch_id     String,
    landed_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (user_id, id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS result_batches_in
(
    id             String,
    ts_ms          Int64,
    schema_version Int32,
    results Array(Tuple(
        id String, ts_ms Int64, schema_version Int32, user_id String, kind String, status String,
        reason Nullable(String), detail String, ledger_lines Int32))
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS results_mv TO results AS
SELECT r.id AS id, fromUnixTimestamp64Milli(r.ts_ms, 'UTC') AS ts, r.user_id AS user_id, r.kind AS kind,
       r.status AS status, r.reason AS reason, r.detail AS detail, toUInt32(r.ledger_lines) AS ledger_lines,
       b.id AS batch_id
FROM result_batches_in AS b
ARRAY JOIN b.results AS r;

CREATE TABLE IF NOT EXISTS withdrawals_to_sign
(
    id        String COMMENT 'the withdrawal id',
    ts        DateTime64(3, 'UTC'),
    user_id   String,
    chain     LowCardinality(String),
    asset     LowCardinality(String),
    amount    Decimal(76, 18),
    address   String,
    landed_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (user_id, id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS withdrawals_to_sign_in
(
    id String, ts_ms Int64, schema_version Int32, user_id String, chain String, asset String, amount String,
    address String
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS withdrawals_to_sign_mv TO withdrawals_to_sign AS
SELECT id, fromUnixTimestamp64Milli(ts_ms, 'UTC') AS ts, user_id, chain, asset, toDecimal256(amount, 18) AS amount,
       address
FROM withdrawals_to_sign_in;

-- Chain events as received (amount kept as the text that came in: this is the input, valid or not).
CREATE TABLE IF NOT EXISTS chain_events
(
    id            String COMMENT 'the input id',
    ts            DateTime64(3, 'UTC'),
    user_id       String,
    kind          LowCardinality(String),
    chain         String,
    tx_hash       String,
    log_index     Nullable(Int32),
    block_number  Nullable(Int64),
    address       String,
    asset         String,
    amount        String,
    account       String,
    deposit_id    String,
    withdrawal_id String,
    reason        String,
    source        String COMMENT 'topic/partition/offset',
    landed_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (user_id, id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS dead_letters
(
    id               String,
    ts               DateTime64(3, 'UTC'),
    source_topic     String,
    source_partition Int32,
    source_offset    Int64,
    key              Nullable(String),
    value            Nullable(String),
    error            String,
    landed_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY id
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS dead_letters_in
(
    id String, ts_ms Int64, schema_version Int32, source_topic String, source_partition Int32,
    source_offset Int64, key Nullable(String), value Nullable(String), error String
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS dead_letters_mv TO dead_letters AS
SELECT id, fromUnixTimestamp64Milli(ts_ms, 'UTC') AS ts, source_topic, source_partition, source_offset, key, value,
       error
FROM dead_letters_in;
