"""The test split re-rendered with another soundfont: audio of another kind for any bench's ``--data``.

    python bench/other_font.py --data demo_sp/data --run demo_sp/run --out demo_sp/other_font

writes ``OUT/data_other_font`` (``quality.other_font_dataset``: the test tracks rendered from their MIDI with
``--font``, preprocessed as the run's config says; train and valid linked unchanged).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import OTHER_FONT, other_font_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--run", required=True, type=Path, help="its config.yaml says the tiers' rates")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--font", default=OTHER_FONT)
    a = ap.parse_args(argv)
    if not Path(a.font).is_file():
        raise SystemExit(f"--font {a.font}: not found (Debian: apt install timgm6mb-soundfont)")
    print(other_font_dataset(a.data, a.run, a.font, a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
