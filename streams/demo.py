"""`make demo`: the whole pipeline on a scripted day, through the real broker, ending with a report.

Starts the local stack (or uses KAFKA_BOOTSTRAP), gives this run fresh topics, starts two engine
workers, plays the day phase by phase (each phase waits for its results, as a client would), then
prints every result, each user's balances (asked through the worker that does *not* own the user, so
the query is forwarded), and a check of the ledger read back from Kafka.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from processors.config import default_config
from processors.inputs import command
from processors.ledger import SYSTEM_PREFIX
from processors.messages import (
    Command,
    DepositConfirmed,
    FillSettle,
    OpenAccount,
    OrderHold,
    OrderRelease,
    Result,
    Transfer,
    WithdrawalApprove,
    WithdrawalBroadcast,
    WithdrawalConfirmed,
    WithdrawalFailed,
    WithdrawalRequest,
)
from processors.money import format_amount, parse_signed
from schemas import CODEC
from streams import demo_margin, rates
from streams.client import CommandClient, ResultWatcher, read_ledger, read_topic
from streams.config import REPO_ROOT, Settings
from streams.partitioner import partition_for
from streams.table import print_table
from streams.topics import COMMANDS, DEAD_LETTER, TO_SIGN, create_all, delete_with_prefix
from streams.workers import WorkerProcess, sink_process

ALICE_ETH = "0x" + "a1" * 20
BOB_ETH = "0x" + "b0" * 20
DEMO_PREFIX = "posflow-demo-"
DEMO_SINK_PORT = 16123
_Body = TypeVar("_Body", bound=Mapping[str, Any])
_Fields = ParamSpec("_Fields")


@dataclass
class Phase:
    title: str
    commands: list[Command]


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


class Day:
    """Builds the day's commands with increasing timestamps and readable ids."""

    def __init__(self) -> None:
        self.ts = 1_767_254_400_000  # 2026-01-01T08:00Z; the day's own clock, so reruns are identical
        self.n = 0

    def _next(self, cmd: Command) -> Command:
        self.n += 1
        self.ts += 60_000
        return cmd._replace(id=cmd.id or f"{cmd.user_id}-{self.n:02d}-{cmd.kind}", ts_ms=self.ts)

    def cmd(self, body: Callable[_Fields, _Body], user: str, /,
            *args: _Fields.args, **fields: _Fields.kwargs) -> Command:
        """The next command of `user`, its id made of the user, its number in the day and its kind."""
        return self._next(command(body, "", user, *args, **fields))

    def deposit(self, user: str, chain: str, tx: str, asset: str, amount: str, address: str) -> Command:
        """A deposit as the chain watcher reports it, its id the chain position."""
        return self._next(command(DepositConfirmed, f"{chain}:{tx}:0", user, chain=chain, tx_hash=tx, log_index=0,
                                  address=address, asset=asset, amount=amount, block_number=100 + self.n,
                                  account="spot"))

    def phases(self) -> list[Phase]:
        c, dep = self.cmd, self.deposit
        alice_dep = dep("alice", "ethereum", "0x" + "11" * 32, "USDT", "60000", ALICE_ETH)
        return [
            Phase("accounts open", [
                c(OpenAccount, "alice", kyc_tier=2, region="DE"),
                c(OpenAccount, "bob", kyc_tier=1, region="SG"),
                c(OpenAccount, "carol", kyc_tier=1, region="BR"),
            ]),
            Phase("deposits confirmed on chain (one below the minimum)", [
                alice_dep,
                dep("bob", "bitcoin", "ab" * 32, "BTC", "2", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"),
                dep("carol", "ethereum", "0x" + "33" * 32, "USDT", "0.5", "0x" + "c0" * 20),
                dep("carol", "ethereum", "0x" + "34" * 32, "USDT", "80", "0x" + "c0" * 20),
            ]),
            Phase("the chain watcher re-sends alice's deposit after a restart (a duplicate)", [alice_dep]),
            Phase("orders hold funds", [
                c(OrderHold, "alice", order_id="A1", account="spot", asset="USDT", amount="30500"),
                c(OrderHold, "bob", order_id="B1", account="spot", asset="BTC", amount="0.5"),
                c(OrderHold, "alice", order_id="A2", account="spot", asset="USDT", amount="5000"),
            ]),
            Phase("a fill settles both sides (0.5 BTC at 61,000 USDT, 0.1% fee), A2 is cancelled", [
                c(FillSettle, "alice", fill_id="F1", order_id="A1", account="spot", pay_asset="USDT",
                  pay_amount="30500", receive_asset="BTC", receive_amount="0.5", fee_amount="0.0005"),
                c(FillSettle, "bob", fill_id="F1", order_id="B1", account="spot", pay_asset="BTC", pay_amount="0.5",
                  receive_asset="USDT", receive_amount="30500", fee_amount="30.5"),
                c(OrderRelease, "alice", order_id="A2", amount=None),
            ]),
            Phase("transfers between sub-accounts", [
                c(Transfer, "alice", asset="USDT", amount="10000", from_account="spot", to_account="margin"),
                c(Transfer, "bob", asset="BTC", amount="0.2", from_account="spot", to_account="isolated:BTC-USDT"),
            ]),
            Phase("withdrawal requests: small (automatic), large (one approver), too large, bad address", [
                c(WithdrawalRequest, "bob", withdrawal_id="W-bob-1", account="spot", chain="ethereum", asset="USDT",
                  amount="1000", fee="1", address=BOB_ETH),
                c(WithdrawalRequest, "alice", withdrawal_id="W-alice-1", account="spot", chain="ethereum",
                  asset="USDT", amount="12000", fee="1", address=ALICE_ETH),
                c(WithdrawalRequest, "carol", withdrawal_id="W-carol-1", account="spot", chain="ethereum",
                  asset="USDT", amount="500", fee="1", address="0x" + "c0" * 20),
                c(WithdrawalRequest, "bob", withdrawal_id="W-bob-2", account="spot", chain="ethereum", asset="USDT",
                  amount="20", fee="1", address="0x1234"),
            ]),
            Phase("an operator approves alice's withdrawal", [
                c(WithdrawalApprove, "alice", withdrawal_id="W-alice-1", approver="ops-lee"),
            ]),
            Phase("the signer broadcasts both", [
                c(WithdrawalBroadcast, "bob", withdrawal_id="W-bob-1", tx_hash="0x" + "e1" * 32),
                c(WithdrawalBroadcast, "alice", withdrawal_id="W-alice-1", tx_hash="0x" + "e2" * 32),
            ]),
            Phase("the chain confirms bob's and drops alice's (funds return)", [
                c(WithdrawalConfirmed, "bob", withdrawal_id="W-bob-1", tx_hash="0x" + "e1" * 32),
                c(WithdrawalFailed, "alice", withdrawal_id="W-alice-1", reason="dropped from mempool"),
            ]),
            Phase("bad input: a finer amount than USDT allows, an unknown user", [
                c(Transfer, "carol", asset="USDT", amount="1.0000001", from_account="spot", to_account="margin"),
                c(Transfer, "mallory", asset="USDT", amount="1", from_account="spot", to_account="margin"),
            ]),
        ]


def _ensure_stack(settings: Settings) -> None:
    if os.environ.get("KAFKA_BOOTSTRAP"):
        print(f"using Kafka at {settings.kafka_bootstrap} (KAFKA_BOOTSTRAP)")
        return
    subprocess.run([str(REPO_ROOT / "deploy" / "local" / "up.sh")], check=True)


def main() -> int:
    base = Settings()
    _step("local stack")
    _ensure_stack(base)
    run = time.strftime("%Y%m%d%H%M%S")
    prefix = f"{DEMO_PREFIX}{run}."
    home = base.home / "demo"
    shutil.rmtree(home, ignore_errors=True)
    env = {"POSFLOW_TOPIC_PREFIX": prefix, "POSFLOW_APP_ID": f"posflow-demo-{run}", "POSFLOW_HOME": str(home),
           "KAFKA_BOOTSTRAP": base.kafka_bootstrap}
    settings = Settings(kafka_bootstrap=base.kafka_bootstrap, topic_prefix=prefix, app_id=env["POSFLOW_APP_ID"])
    delete_with_prefix(settings, DEMO_PREFIX, keep_prefix=prefix)  # what earlier demo runs left
    create_all(settings)
    print(f"fresh topics for this run: {prefix}*  ({settings.partitions} partitions each)")

    _step("two engine workers")
    workers = [WorkerProcess("streams.worker", port, env, base.home / "logs" / f"demo-worker-{port}.log",
                             supervise=True)
               for port in (16066, 16067)]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.wait_until("/stats/", lambda s: True, timeout=120)
            print(f"worker {w.url} up (log {w.log_path})")
        code = _play(settings, workers)
    finally:
        for w in workers:
            w.stop()
        print("\nworkers stopped; Kafka and anvil keep running (`make down` stops them).")
    return max(code, _audit(settings, env, base.home / "logs"))


FINANCE = (
    ("liabilities per asset (view liabilities)", "SELECT * FROM liabilities ORDER BY asset"),
    ("system accounts (view system_accounts; clearing must be 0)",
     "SELECT * FROM system_accounts ORDER BY account, asset"),
    ("daily deposits, withdrawals, fees (view daily_flows)",
     "SELECT day, asset, deposits, withdrawals, trading_fees, withdrawal_fees FROM daily_flows ORDER BY day, asset"),
    ("alice's balances from the ledger (view balances)",
     "SELECT account, bucket, asset, balance, lines FROM balances WHERE user_id = 'alice' "
     "ORDER BY account, asset, bucket"),
    ("margin loans per asset after the margin day (view loans)", "SELECT * FROM loans ORDER BY asset"),
    ("the insurance fund per day and asset (view insurance_fund)",
     "SELECT * FROM insurance_fund ORDER BY asset, day"),
    ("each liquidation (view liquidations)",
     "SELECT user_id, account, tier, level_at_start, parts, shortfall FROM liquidations ORDER BY started_at"),
)


def _audit(settings: Settings, env: dict[str, str], logs: Path) -> int:
    """The sink lands the run's topics in chDB; finance views are queried through the sink's HTTP port;
    then `posflow reconcile` checks the ledger against itself and against the engine's stored state."""
    from sinks.reconcile import wait_for_sink
    from sinks.store import connect_when_up

    _step(f"the audit ledger in ClickHouse (chDB in {env['POSFLOW_HOME']}/clickhouse)")
    sink = sink_process(env, logs / "demo-sink.log", DEMO_SINK_PORT).start()
    try:
        lag = wait_for_sink(settings, timeout_s=120)
        if lag:
            print(f"the sink did not land the ledger within 120 s (lag {lag}); log: {sink.log_path}\n{sink.log_tail()}")
            return 1
        store = connect_when_up(sink.url)
        print(f"sink landed every ledger record; querying it as a ClickHouse server at {sink.url}")
        for title, sql in FINANCE:
            rows = store.query(sql)
            print(f"\n{title}")
            print_table(rows.columns, rows.rows)
        pools = rates.pools(default_config(), rates.borrowed(store), settings.pool_supply)
        print("\nthe lending pools' utilization from the ledger, as `posflow rates` publishes it")
        print_table(["asset", "borrowed", "supplied", "hourly rate"],
                    [(p.asset, p.borrowed, p.supplied, rates.hourly_percent(default_config(), p)) for p in pools])
        store.close()
    finally:
        sink.stop()
    _step("reconciliation: posflow reconcile")
    proc = subprocess.run([sys.executable, "-m", "streams.cli", "reconcile"], env={**os.environ, **env},
                          cwd=REPO_ROOT, check=False)
    return proc.returncode


def _play(settings: Settings, workers: list[WorkerProcess]) -> int:
    cfg = default_config()
    watcher = ResultWatcher(settings)
    client = CommandClient(settings)
    day = Day()
    results: list[Result] = []

    def show(r: Result) -> None:
        print(f"  {r.user_id:<8} {r.kind:<20} {r.status:<9} {r.reason or '':<20} {r.detail}")

    for phase in day.phases():
        _step(phase.title)
        client.send_batch(phase.commands)
        client.flush()
        got = watcher.wait_for([c.id for c in phase.commands], timeout=120)
        for cmd in phase.commands:
            results.append(got[cmd.id])
            show(got[cmd.id])
    _step("an undecodable record on the commands topic")
    from confluent_kafka import Producer

    from streams.kafka import producer_config

    raw = Producer(producer_config(settings))
    raw.produce(COMMANDS.name(settings), b"\x00not avro at all", b"alice")
    raw.flush(10)
    deadline = time.monotonic() + 60
    dead: list[tuple[int, int, bytes | None, bytes]] = []
    while not dead and time.monotonic() < deadline:
        dead = read_topic(settings, DEAD_LETTER.name(settings))
        time.sleep(0.5)
    for *_, value in dead:
        d = CODEC.decode_as("DeadLetter", value)
        print(f"  dead letter {d['id']}: {d['error']}  (original bytes kept: {d['value']!r})")

    _step("balances, asked through the worker that does not own the user")
    for user in ("alice", "bob", "carol"):
        owner = partition_for(user.encode(), settings.partitions)
        asked = next((w for w in workers if owner not in w.get_json("/stats/")["partitions"]), workers[0])
        view = asked.get_json(f"/users/{user}/balances")
        print(f"\n{user} (partition {owner}, asked {asked.url}): status {view['status']}, "
              f"withdrawals {view['withdrawals'] or '-'}")
        print_table(["account", "asset", "available", "frozen", "borrowed"],
                    [(r["account"], r["asset"], r["available"], r["frozen"], r["borrowed"])
                     for r in view["balances"]])

    _step("the margin day: loans, a falling price, a margin call, two liquidations (one short)")
    margin_results, margin_ok = demo_margin.play(settings, workers, client, watcher, show)
    results += margin_results

    _step("the ledger, read back from Kafka")
    lines = read_ledger(settings)
    to_sign = read_topic(settings, TO_SIGN.name(settings))
    by_id = {ln["id"]: ln for ln in lines}
    net: dict[str, int] = defaultdict(int)
    system: dict[tuple[str, str], int] = defaultdict(int)
    for ln in by_id.values():
        scale = cfg.assets[ln["asset"]].scale
        minor = parse_signed(ln["amount"], scale)
        net[ln["asset"]] += minor
        if ln["account"].startswith(SYSTEM_PREFIX):
            system[(ln["account"], ln["asset"])] += minor
    print(f"{len(lines)} ledger lines ({len(by_id)} distinct ids), {len(to_sign)} withdrawals sent to the signer")
    print_table(["system account", "asset", "balance"],
                [(a, s, format_amount(v, cfg.assets[s].scale)) for (a, s), v in sorted(system.items())])
    print_table(["asset", "sum of all lines (must be 0)"],
                [(a, format_amount(v, cfg.assets[a].scale)) for a, v in sorted(net.items())])
    accepted = sum(r.status == "ACCEPTED" for r in results)
    print(f"\n{len(results)} inputs: {accepted} accepted, {len(results) - accepted} refused with a reason; "
          f"{len(dead)} dead letter(s).")
    ok = all(v == 0 for v in net.values()) and len(by_id) == len(lines) and len(dead) == 1 and margin_ok
    print("ledger balanced per asset, no line twice:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
