"""The README's result tables are the committed JSONs' (docs/results/tables.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def test_readme_tables_match_the_result_jsons():
    path = Path(__file__).resolve().parents[1] / "docs" / "results" / "tables.py"
    spec = importlib.util.spec_from_file_location("results_tables", path)
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    text = tables.README.read_text()
    assert "<!-- results:evaluation -->" in text and "<!-- results:quality -->" in text
    assert tables.render(text) == text, "README tables differ from docs/results: run python docs/results/tables.py"
