-- Liquidation (issue 11). MarginEvent v2 says what a liquidation did (detail) and, once it completes, the debt
-- the insurance fund paid (shortfall, valued up in the valuation asset, USDT). Rows landed before this migration
-- read '' and 0: no liquidation event was sent before v2, and a v1 record landing later is resolved to v2 with
-- those defaults by the sink (sinks.sink.Lander.prepare) before ClickHouse sees it.
-- Order matters while a sink inserts: the target's columns first, then the landing table's, then the view that
-- reads one and writes the other, so no insert meets a view naming a column that does not exist yet. MODIFY
-- QUERY swaps the view's query in one step (as in 0004).
ALTER TABLE margin_events
    ADD COLUMN IF NOT EXISTS detail String DEFAULT '' COMMENT 'what a liquidation event did; empty otherwise'
        AFTER tier,
    ADD COLUMN IF NOT EXISTS shortfall Decimal(76, 18) DEFAULT 0
        COMMENT 'LiquidationCompleted: the debt the insurance fund paid, valued in USDT; 0 otherwise' AFTER detail;
ALTER TABLE margin_events COMMENT COLUMN kind 'MarginLevel, MarginCall, LiquidationStarted or LiquidationCompleted';

ALTER TABLE margin_events_in
    ADD COLUMN IF NOT EXISTS detail String DEFAULT '',
    ADD COLUMN IF NOT EXISTS shortfall String DEFAULT '0';

ALTER TABLE margin_events_mv MODIFY QUERY
SELECT id, fromUnixTimestamp64Milli(greatest(least(ts_ms, 10413791999999), -2208988800000), 'UTC') AS ts, user_id,
       account, kind, band, previous_band, level, tier, detail, toDecimal256(shortfall, 18) AS shortfall
FROM margin_events_in;

-- The insurance fund per day (with any line on it) and asset: clearance fees in (the fund's share of a
-- liquidation fill's proceeds), shortfalls paid out (a liquidated account's debts its assets could not pay, one
-- entry per liquidation, its interest and principal on separate lines), and its balance at the end of the day. The
-- ledger is the fund's only record, so the balance is every line's sum, whatever the entry: a line of any other
-- entry type (none is written today; a top-up of the fund would be one) shows as `other` rather than going
-- missing from the columns that explain the balance.
CREATE OR REPLACE VIEW insurance_fund AS
SELECT day, asset, fees, fee_fills, shortfalls_paid, shortfalls, net - fees + shortfalls_paid AS other,
       sum(net) OVER (PARTITION BY asset ORDER BY day) AS balance
FROM
(
    SELECT
        toDate(ts) AS day,
        asset,
        sumIf(amount, entry_type = {{ledger.LIQUIDATION_FILL}} AND amount > 0) AS fees,
        countIf(entry_type = {{ledger.LIQUIDATION_FILL}} AND amount > 0) AS fee_fills,
        -sumIf(amount, entry_type IN ({{ledger.LIQUIDATION}}, {{ledger.LIQUIDATION_FILL}}) AND amount < 0)
            AS shortfalls_paid,
        uniqExactIf(entry, entry_type IN ({{ledger.LIQUIDATION}}, {{ledger.LIQUIDATION_FILL}}) AND amount < 0)
            AS shortfalls,
        sum(amount) AS net
    FROM ledger_lines FINAL
    WHERE account = {{ledger.INSURANCE_FUND}}
    GROUP BY day, asset
);

-- One row per liquidation, from its two margin events. Both are named <user>/<account>/<liquidation id>/<kind>
-- (processors.liquidation), the liquidation id being its Liquidate input's (liq/<account>/<the user's ledger
-- sequence>, unique per user). It is cut out by the lengths of the row's own user_id, account and kind rather
-- than by splitting on '/', which the liquidation id itself contains (and a user id may). Pairing each start with
-- the next completion of the same account would also work while both always land, but one event missing or
-- landing late would shift every pair after it; by id, a missing event leaves its own row incomplete and no
-- other. A liquidation under way has no completed_at, parts or shortfall (NULL); parts are read from the
-- completion's detail ('<n> parts'). The shortfall is the completion's, valued in USDT; the ledger's lines of
-- it, per asset, are in insurance_fund.
CREATE OR REPLACE VIEW liquidations AS
SELECT
    user_id,
    account,
    liquidation_id,
    any(tier) AS tier,
    minIfOrNull(ts, kind = 'LiquidationStarted') AS started_at,
    anyIfOrNull(level, kind = 'LiquidationStarted') AS level_at_start,
    maxIfOrNull(ts, kind = 'LiquidationCompleted') AS completed_at,
    toUInt32OrNull(extract(anyIfOrNull(detail, kind = 'LiquidationCompleted'), '^([0-9]+) parts')) AS parts,
    maxIfOrNull(shortfall, kind = 'LiquidationCompleted') AS shortfall
FROM
(
    SELECT user_id, account, kind, ts, tier, level, detail, shortfall,
           substring(id, length(user_id) + length(account) + 3,
                     length(id) - length(user_id) - length(account) - length(kind) - 3) AS liquidation_id
    FROM margin_events FINAL
    WHERE kind IN ('LiquidationStarted', 'LiquidationCompleted')
)
GROUP BY user_id, account, liquidation_id;
