"""The compiled core is used only when built from the sources on disk, and `make test` tests it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import processors
from processors import engine, why_not_compiled


def test_make_test_runs_the_compiled_core() -> None:
    if os.environ.get("POSFLOW_EXPECT_COMPILED") != "1":
        pytest.skip("run outside `make test`: the core may run as Python")
    assert processors.COMPILED, processors.NOT_COMPILED_BECAUSE
    assert engine.__file__ is not None and engine.__file__.endswith(".so"), engine.__file__


def test_a_build_from_other_sources_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSFLOW_PURE_PYTHON", raising=False)
    digest = tmp_path / "SOURCES.sha256"
    assert why_not_compiled(digest) == "not built (make compile)"
    digest.write_text(processors.sources_digest() + "\n")
    assert why_not_compiled(digest) == ""
    digest.write_text("0" * 64 + "\n")  # built before a module was edited
    assert why_not_compiled(digest) == "sources changed since the build (make compile)"
    monkeypatch.setenv("POSFLOW_PURE_PYTHON", "1")
    assert why_not_compiled(digest) == "POSFLOW_PURE_PYTHON is set"


def test_the_digest_covers_every_core_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in processors.CORE_MODULES:
        (tmp_path / f"{name}.py").write_bytes((processors.SOURCE_DIR / f"{name}.py").read_bytes())
    monkeypatch.setattr(processors, "SOURCE_DIR", tmp_path)
    assert processors.sources_digest() == processors.sources_digest()
    seen = {processors.sources_digest()}
    for name in processors.CORE_MODULES:
        with (tmp_path / f"{name}.py").open("a") as f:
            f.write("\n")
        seen.add(processors.sources_digest())
    assert len(seen) == len(processors.CORE_MODULES) + 1
