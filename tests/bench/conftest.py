"""The bench scripts import each other as top-level modules (``from machine import ...``): bench/ on the path."""

import sys
from pathlib import Path

BENCH = str(Path(__file__).resolve().parents[2] / "bench")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
