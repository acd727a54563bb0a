-- Finance views. Every one reads ledger_lines with FINAL, so a line is counted once however often it
-- was delivered. Amounts are in major units; a borrowed bucket's balance is -borrowed (a liability).

-- Balance of every account (user sub-account bucket, or system account) at a point in time:
--   SELECT * FROM balances_at(at = '2026-11-21 12:00:00') WHERE user_id = 'alice'
CREATE OR REPLACE VIEW balances_at AS
SELECT user_id, account, bucket, asset, sum(amount) AS balance, count() AS lines, max(ts) AS last_change
FROM ledger_lines FINAL
WHERE ts <= {at:DateTime64(3, 'UTC')}
GROUP BY user_id, account, bucket, asset;

-- The same, now.
CREATE OR REPLACE VIEW balances AS
SELECT user_id, account, bucket, asset, sum(amount) AS balance, count() AS lines, max(ts) AS last_change
FROM ledger_lines FINAL
GROUP BY user_id, account, bucket, asset;

-- Per day and asset, from the custody and fee-revenue side of each entry.
CREATE OR REPLACE VIEW daily_flows AS
SELECT
    toDate(ts) AS day,
    asset,
    -sumIf(amount, entry_type = {{ledger.DEPOSIT}} AND startsWith(account, {{ledger.CUSTODY_PREFIX}})) AS deposits,
    uniqExactIf(entry, entry_type = {{ledger.DEPOSIT}}) AS deposit_count,
    sumIf(amount, entry_type = {{ledger.DEPOSIT_REVERSAL}} AND startsWith(account, {{ledger.CUSTODY_PREFIX}})) AS deposit_reversals,
    sumIf(amount, entry_type = {{ledger.WITHDRAWAL}} AND startsWith(account, {{ledger.CUSTODY_PREFIX}})) AS withdrawals,
    uniqExactIf(entry, entry_type = {{ledger.WITHDRAWAL}}) AS withdrawal_count,
    sumIf(amount, account = {{ledger.FEE_REVENUE}} AND entry_type = {{ledger.FILL}}) AS trading_fees,
    sumIf(amount, account = {{ledger.FEE_REVENUE}} AND entry_type = {{ledger.WITHDRAWAL}}) AS withdrawal_fees,
    sumIf(amount, account = {{ledger.FEE_REVENUE}}) AS fees
FROM ledger_lines FINAL
GROUP BY day, asset;

-- What the exchange owes its users per asset (available + frozen), what users owe it (borrowed), net.
CREATE OR REPLACE VIEW liabilities AS
SELECT
    asset,
    sumIf(amount, bucket = 'available') AS available,
    sumIf(amount, bucket = 'frozen') AS frozen,
    -sumIf(amount, bucket = 'borrowed') AS borrowed,
    sum(amount) AS net_owed_to_users,
    uniqExactIf(user_id, amount != 0) AS users
FROM ledger_lines FINAL
WHERE user_id != {{ledger.SYSTEM_USER}}
GROUP BY asset;

-- Clearing accounts per asset: every fill passes through sys:clearing, so each must net to zero.
CREATE OR REPLACE VIEW clearing AS
SELECT asset, sum(amount) AS balance, count() AS lines
FROM ledger_lines FINAL
WHERE account = {{ledger.CLEARING}}
GROUP BY asset;

-- Every system account per asset (custody per chain, clearing, fee revenue).
CREATE OR REPLACE VIEW system_accounts AS
SELECT account, asset, sum(amount) AS balance, count() AS lines
FROM ledger_lines FINAL
WHERE user_id = {{ledger.SYSTEM_USER}}
GROUP BY account, asset;

-- Reconciliation (a): entries that do not net to zero in an asset, and the per-asset totals.
CREATE OR REPLACE VIEW unbalanced_entries AS
SELECT entry, asset, sum(amount) AS net, count() AS lines, groupArray(line_no) AS line_nos
FROM ledger_lines FINAL
GROUP BY entry, asset
HAVING net != 0;

CREATE OR REPLACE VIEW asset_totals AS
SELECT asset, sum(amount) AS net, count() AS lines
FROM ledger_lines FINAL
GROUP BY asset;

-- Entries whose line numbers are not exactly 0..n-1 (a line missing, or one stored under a second id).
CREATE OR REPLACE VIEW entry_gaps AS
SELECT entry, count() AS lines, uniqExact(line_no) AS distinct_line_nos, max(line_no) + 1 AS expected
FROM ledger_lines FINAL
GROUP BY entry
HAVING lines != expected OR distinct_line_nos != lines;

-- Each user's lines carry seq 1..n; a gap or a repeat means a line is missing or extra.
CREATE OR REPLACE VIEW sequence_gaps AS
SELECT owner, count() AS lines, uniqExact(seq) AS distinct_seqs, max(seq) AS max_seq
FROM (SELECT substring(entry, 1, length(entry) - length(entry_id) - 1) AS owner, seq FROM ledger_lines FINAL)
GROUP BY owner
HAVING lines != max_seq OR distinct_seqs != lines;
