"""The ledger's names (entry types, system accounts) are defined once, in processors.ledger: the core posts
with them, the ClickHouse views name them as {{ledger.NAME}} (rendered by sinks.migrations), and nothing
else spells them out. These tests fail when the SQL or any module disagrees with the core."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from processors import ledger
from sinks.migrations import LEDGER_NAMES, SQL_DIR, available, render
from streams.config import REPO_ROOT

# Checksums of migrations applied somewhere: they must never change (sinks.migrations refuses a changed
# one), so a ledger name renamed in the core, which changes what they render to, fails here first.
APPLIED = {1: "a2ee24daf99c1a6f", 2: "35d08954663c5932", 3: "c67665fb196c2b2f", 4: "7e6da5233c2b6b7a"}

_LITERAL = re.compile(r"'((?:[^'\\]|\\.)*)'")
_COMMENT_TEXT = re.compile(r"COMMENT\s+'(?:[^'\\]|\\.)*'")


def _names_a_ledger_name(text: str) -> bool:
    """A name itself, a system account in any text, or an entry type quoted in SQL."""
    return (text in ledger.ENTRY_TYPES or ledger.SYSTEM_PREFIX in text
            or any(f"'{t}'" in text for t in ledger.ENTRY_TYPES))


def test_the_sql_names_only_what_the_core_defines() -> None:
    for mig in available():  # renders every {{ledger.NAME}}: an unknown name raises here
        assert "{{" not in mig.sql, f"{mig.version:04d}_{mig.name}: a placeholder was not rendered"
    with pytest.raises(KeyError, match="NOT_A_NAME"):
        render("SELECT {{ledger.NOT_A_NAME}}")
    assert render("x = {{ledger.CLEARING}} AND t = {{ ledger.FILL }}") == "x = 'sys:clearing' AND t = 'FILL'"


def test_applied_migrations_render_as_they_were_applied() -> None:
    assert {m.version: m.checksum for m in available() if m.version in APPLIED} == APPLIED


def test_the_sql_spells_out_no_ledger_name() -> None:
    """Each name is a placeholder in the SQL files: a literal spelled out could drift from the core."""
    for path in sorted(SQL_DIR.glob("*.sql")):
        code = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
        literals = _LITERAL.findall(_COMMENT_TEXT.sub("", code))
        assert not [t for t in literals if _names_a_ledger_name(t) or re.fullmatch(r"[A-Z]+(?:_[A-Z]+)+", t)], \
            f"{path.name}: write ledger names as {{{{ledger.NAME}}}}"


def test_no_module_spells_out_a_ledger_name() -> None:
    """Python code (core, shell, sinks, bench, tests) uses the constants, not the names' text."""
    found = []
    for folder in ("processors", "streams", "sinks", "bench", "tests", "deploy"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if path == REPO_ROOT / "processors" / "ledger.py" or path == Path(__file__):
                continue
            tree = ast.parse(path.read_text())
            docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
            for node in ast.walk(tree):
                if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                        and _names_a_ledger_name(node.value)):
                    found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "use processors.ledger's constants:\n" + "\n".join(found)


def test_sql_may_name_every_entry_type_and_system_account() -> None:
    accounts = {ledger.CLEARING, ledger.FEE_REVENUE, ledger.LENDING_POOL, ledger.LOANS_RECEIVABLE,
                ledger.INTEREST_INCOME, ledger.INTEREST_ACCRUED, ledger.INSURANCE_FUND}
    assert set(LEDGER_NAMES.values()) == {*ledger.ENTRY_TYPES, ledger.SYSTEM_USER, ledger.SYSTEM_PREFIX,
                                          ledger.CUSTODY_PREFIX, *accounts}
    assert all(a.startswith(ledger.SYSTEM_PREFIX) for a in (*accounts, ledger.custody("x")))
