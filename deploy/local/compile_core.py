"""Compile the core modules with mypyc into .local/compiled/processors/ (see processors/__init__.py).

Does nothing when the recorded digest already matches the sources. Assertions are kept: the core's
invariant checks run compiled as they run in Python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from processors import COMPILED_DIR, CORE_MODULES, DIGEST_FILE, SOURCE_DIR, sources_digest

SETUP = """
from setuptools import setup
from mypyc.build import mypycify
setup(name="posflow-core", ext_modules=mypycify({paths!r}, group_name="processors.core", opt_level="3",
      strip_asserts=False, target_dir={c_dir!r}))
"""


def main() -> int:
    digest = sources_digest()
    if DIGEST_FILE.exists() and DIGEST_FILE.read_text().strip() == digest:
        print("compiled core is up to date")
        return 0
    if shutil.which(os.environ.get("CC", "cc")) is None:
        print("compiling the core needs a C compiler: apt-get install gcc", file=sys.stderr)
        return 1
    root = SOURCE_DIR.parent
    build = COMPILED_DIR.parent / "build"
    started = time.monotonic()
    print(f"compiling the core with mypyc ({len(CORE_MODULES)} modules, about 20 s) ...", flush=True)
    build.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=build) as out:
        paths = [f"processors/{m}.py" for m in CORE_MODULES]
        setup = build / "setup.py"
        setup.write_text(SETUP.format(paths=paths, c_dir=str(build / "c")))
        log = build / "build.log"
        with log.open("w") as sink:
            done = subprocess.run(
                [sys.executable, str(setup), "build_ext", "--build-lib", out, "--build-temp", str(build / "temp")],
                cwd=root, stdout=sink, stderr=subprocess.STDOUT, check=False,
                env={**os.environ, "POSFLOW_PURE_PYTHON": "1"},
            )
        if done.returncode != 0:
            print(log.read_text()[-4000:], file=sys.stderr)
            print(f"mypyc failed (full log: {log}); the core still runs as Python", file=sys.stderr)
            return 1
        # Swap the whole directory at once, the digest written last: a half-built core is never used.
        shutil.rmtree(COMPILED_DIR, ignore_errors=True)
        shutil.move(os.path.join(out, "processors"), COMPILED_DIR)
        DIGEST_FILE.write_text(digest + "\n")
    print(f"compiled core built in {time.monotonic() - started:.0f}s: {COMPILED_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
