"""The recovery tests (archive, replay, rebuild) reuse the processor harness of tests/processors."""

from __future__ import annotations

import sys
from pathlib import Path

PROCESSOR_TESTS = Path(__file__).resolve().parents[1]
if str(PROCESSOR_TESTS) not in sys.path:
    sys.path.append(str(PROCESSOR_TESTS))
