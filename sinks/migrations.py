"""Versioned DDL, applied at start, idempotent.

`sinks/sql/NNNN_name.sql` are applied in order; each applied version is recorded in
`schema_migrations` with the file's checksum. Statements are written to be safe to run twice
(`IF NOT EXISTS`, `OR REPLACE`), so a start that died halfway through a file re-runs it whole.
A file changed after it was applied is refused: add a new migration instead.

The ledger's names (entry types, system accounts) are the core's (processors.ledger): the SQL names them
as `{{ledger.NAME}}`, rendered to a string literal when the file is read, so a view cannot count a name
the core never writes, and an unknown name fails the migration. The checksum is the rendered text's: a
name changed in the core changes an applied migration, which is refused like any other change (lines
already landed keep the old name; say in a new migration how the views read both).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from processors import ledger
from sinks.store import Store, sql_quote

SQL_DIR = Path(__file__).resolve().parent / "sql"
_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")
_LEDGER_NAME = re.compile(r"\{\{\s*ledger\.(\w+)\s*\}\}")
# What SQL may name: the entry types and the system accounts' names (with their prefixes and user id).
LEDGER_NAMES: dict[str, str] = {
    name: value for name, value in vars(ledger).items()
    if isinstance(value, str) and name.isupper() and not name.startswith("_")
    and (value in ledger.ENTRY_TYPES or value == ledger.SYSTEM_USER or value.startswith(ledger.SYSTEM_PREFIX))
}


def render(sql: str) -> str:
    """`{{ledger.NAME}}` replaced by the core's value as a string literal; an unknown name raises KeyError."""

    def literal(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in LEDGER_NAMES:
            raise KeyError(f"{{{{ledger.{name}}}}}: processors.ledger defines no entry type or system account {name}")
        return sql_quote(LEDGER_NAMES[name])

    return _LEDGER_NAME.sub(literal, sql)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self) -> list[str]:
        """Split on `;` at line ends; comment lines dropped (none of ours has `;` inside a string)."""
        text = "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        return [s.strip() for s in re.split(r";\s*(?:\n|$)", text) if s.strip()]


def available(sql_dir: Path = SQL_DIR) -> list[Migration]:
    found = []
    for path in sorted(sql_dir.glob("*.sql")):
        m = _NAME.match(path.name)
        assert m, f"{path.name}: migrations are named NNNN_name.sql"
        found.append(Migration(int(m.group(1)), m.group(2), render(path.read_text())))
    versions = [m.version for m in found]
    assert versions == list(range(1, len(found) + 1)), f"migration versions must be 1..n without gaps: {versions}"
    return found


class MigrationChanged(RuntimeError):
    pass


def migrate(store: Store, sql_dir: Path = SQL_DIR) -> list[tuple[int, str, str]]:
    """Apply what is missing; returns (version, name, 'applied' | 'present') rows."""
    store.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, checksum String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
    )
    applied = {r[0]: r[1] for r in store.query("SELECT version, checksum FROM schema_migrations FINAL").rows}
    report = []
    for mig in available(sql_dir):
        if mig.version in applied:
            if applied[mig.version] != mig.checksum:
                raise MigrationChanged(
                    f"migration {mig.version:04d}_{mig.name}.sql changed after it was applied to {store.where} "
                    f"(checksum {applied[mig.version]} there, {mig.checksum} here); put the change in a new migration"
                )
            report.append((mig.version, mig.name, "present"))
            continue
        for statement in mig.statements():
            store.command(statement)
        store.command("INSERT INTO schema_migrations (version, name, checksum) VALUES "
                      "({v:UInt32}, {n:String}, {c:String})", {"v": mig.version, "n": mig.name, "c": mig.checksum})
        report.append((mig.version, mig.name, "applied"))
    return report
