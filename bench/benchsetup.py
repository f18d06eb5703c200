"""Imported first by every benchmark script. Benchmarks measure release builds: STICKYLAB_BIN defaults
here to .build/release (the tests' harness, Tests/python/harness.py, defaults to the debug build,
which is several times slower and would make every figure meaningless). It also puts Tests/python on
the path, for the harness and the load generator's driver."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("STICKYLAB_BIN", str(ROOT / ".build" / "release"))
if str(ROOT / "Tests" / "python") not in sys.path:
    sys.path.insert(0, str(ROOT / "Tests" / "python"))
