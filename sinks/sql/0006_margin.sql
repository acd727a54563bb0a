-- Margin (issue 11). Margin events as the engine sent them: one row per crossing of a tier's line, its id
-- naming the account and the input that crossed (processors.monitor), so a retried insert adds nothing.
CREATE TABLE IF NOT EXISTS margin_events
(
    id            String,
    ts            DateTime64(3, 'UTC') COMMENT 'engine time of the input that crossed the line',
    user_id       String,
    account       LowCardinality(String),
    kind          LowCardinality(String) COMMENT 'MarginLevel or MarginCall',
    band          LowCardinality(String),
    previous_band LowCardinality(String),
    level         String COMMENT 'assets / liabilities, four decimals rounded down; inf with no liabilities',
    tier          LowCardinality(String),
    landed_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (user_id, id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS margin_events_in
(
    id String, ts_ms Int64, schema_version Int32, user_id String, account String, kind String, band String,
    previous_band String, level String, tier String
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS margin_events_mv TO margin_events AS
SELECT id, fromUnixTimestamp64Milli(greatest(least(ts_ms, 10413791999999), -2208988800000), 'UTC') AS ts, user_id,
       account, kind, band, previous_band, level, tier
FROM margin_events_in;

-- Margin loans per asset, from the ledger: principal lent out (the borrowed bucket of margin and isolated
-- accounts; a reverted deposit's shortfall in a spot account is not a loan), interest booked and not yet
-- paid (interest accrues between bookings in the engine: `posflow margin` shows it), and the borrowers.
CREATE OR REPLACE VIEW loans AS
SELECT
    asset,
    -sumIf(amount, bucket = 'borrowed') AS principal,
    -sumIf(amount, bucket = 'interest') AS interest_booked_unpaid,
    uniqExactIf(user_id, bucket = 'borrowed' AND amount != 0) AS borrowers
FROM ledger_lines FINAL
WHERE user_id != {{ledger.SYSTEM_USER}} AND (account = 'margin' OR startsWith(account, 'isolated:'))
GROUP BY asset;

-- Interest income per day and asset: what margin loans were charged, as booked.
CREATE OR REPLACE VIEW interest_income_daily AS
SELECT toDate(ts) AS day, asset, sum(amount) AS interest, count() AS bookings
FROM ledger_lines FINAL
WHERE account = {{ledger.INTEREST_INCOME}}
GROUP BY day, asset;
