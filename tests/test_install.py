"""Strata as an installed package: presets and the demo corpus list are package data.

The fast tests check how a config name is resolved.  The slow one builds a wheel (offline, no
build isolation), installs it with ``pip --target`` into a temporary folder and runs the
installed copy from another folder: Strata's code and data must come from the wheel only, the
dependencies from this environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.util import find_spec
from pathlib import Path

import pytest

import pipeline
from pipeline.config import CONFIG_DIR, ConfigError, load_config, preset_names, resolve_config
from pipeline.corpus.demo_data import DEMO_CSV, load_candidates

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- config names


def test_preset_by_name_file_name_and_checkout_path():
    tiny = load_config("tiny")
    assert load_config(None) == tiny
    assert load_config("tiny.yaml") == tiny
    assert load_config("configs/tiny.yaml") == tiny
    assert load_config(CONFIG_DIR / "tiny.yaml") == tiny
    assert load_config("base") != tiny
    assert preset_names() == ["base", "tiny"]


def test_checkout_configs_and_data_are_the_package_data():
    """One copy each: the checkout's configs/ and data/ lead to the package folders."""
    for name in preset_names():
        assert (ROOT / "configs" / f"{name}.yaml").resolve() == (CONFIG_DIR / f"{name}.yaml").resolve()
    assert (ROOT / "data" / "demo_corpus.csv").resolve() == DEMO_CSV.resolve()
    assert DEMO_CSV.parent.parent == Path(pipeline.__file__).resolve().parent  # inside the package
    assert len(load_candidates()) > 0


def test_unknown_name_lists_the_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for bad in ("tinyy", "configs/nope.yaml", "elsewhere/tiny.yaml", str(tmp_path / "missing.yaml")):
        with pytest.raises(ConfigError, match=r"no such config file or preset \(presets: base, tiny\)"):
            load_config(bad)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError, match="not a config file"):
        load_config("folder")


def test_from_another_folder(tmp_path, monkeypatch):
    """Presets work from any folder; a file that is there wins over a preset of the same name."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()  # e.g. a run folder named like the preset
    assert load_config("tiny") == load_config(CONFIG_DIR / "tiny.yaml")
    assert load_config("configs/base.yaml") == load_config(CONFIG_DIR / "base.yaml")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "base.yaml").write_text("train:\n  lr: 0.123\n")
    assert resolve_config("configs/base.yaml") == Path("configs/base.yaml")
    assert load_config("configs/base.yaml").train.lr == 0.123


# ----------------------------------------------------------------------------- non-editable install


def _build_and_install(tmp: Path) -> Path:
    """Wheel from a copy of the sources (the checkout is left alone), installed into ``tmp/site``."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for pkg in ("pipeline", "flows", "models"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    pip = [sys.executable, "-m", "pip"]
    wheels = tmp / "wheels"
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(wheels),
                    str(src)], check=True, env=env, cwd=tmp, timeout=300)
    (wheel,) = wheels.glob("strata-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for data in ("pipeline/configs/tiny.yaml", "pipeline/configs/base.yaml", "pipeline/data/demo_corpus.csv"):
        assert data in names
    dist_info = wheel.name.split("-py")[0] + ".dist-info"
    assert {n.split("/")[0] for n in names} == {"pipeline", "flows", "models", dist_info}
    site = tmp / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
                   check=True, env=env, cwd=tmp, timeout=300)
    return site


PROBE = """
import json
import flows, flows.cli, models, pipeline
from pipeline.config import ConfigError, load_config
from pipeline.corpus.demo_data import DEMO_CSV, load_candidates

tiny = load_config("tiny")
try:
    load_config("nope")
    error = None
except ConfigError as e:
    error = str(e)
print(json.dumps({
    "files": [m.__file__ for m in (flows, flows.cli, models, pipeline)],
    "same": tiny == load_config(None) == load_config("configs/tiny.yaml"),
    "stages": len(tiny.stages),
    "base_rates": list(load_config("base").data.rates),
    "error": error,
    "demo_csv": str(DEMO_CSV),
    "works": len(load_candidates()),
}))
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(find_spec("setuptools") is None, reason="building the wheel offline needs setuptools (dev extras)")
def test_wheel_install_runs_from_another_folder(tmp_path):
    site = _build_and_install(tmp_path)
    assert not (site / "tests").exists() and not (site / "configs").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=str(site), PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")

    out = subprocess.run([sys.executable, "-c", PROBE], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    for f in got["files"] + [got["demo_csv"]]:
        assert Path(f).resolve().is_relative_to(site.resolve()), f"{f} is not from the installed wheel"
    assert got["same"] and got["stages"] == 3 and got["works"] > 0
    assert got["base_rates"] == list(load_config("base").data.rates)
    assert "presets: base, tiny" in got["error"]

    strata = site / "bin" / "strata"  # the console script, as pip writes it
    assert strata.is_file()
    for cmd in ([str(strata), "--help"], [sys.executable, "-m", "flows.cli", "--help"]):
        out = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert "demo-data" in out.stdout and "train" in out.stdout
