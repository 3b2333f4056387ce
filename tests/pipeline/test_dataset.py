"""pipeline.corpus.dataset: manifest errors, aligned seeded crops, whole tracks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import config_from_dict
from pipeline.corpus import preprocess as pp
from pipeline.corpus.dataset import StageCrops, iter_tracks, load_manifest, track_ends
from pipeline.corpus.manifest import write_dataset
from pipeline.errors import DatasetError
from pipeline.io import atomic_write_json, load_npy
from tests.pipeline.test_preprocess import tone, write_midi, write_wav

CROPS = [400, 800, 1600]  # stage crops (samples at 2, 8, 16 kHz)


def small_cfg(rates=(2000, 8000, 16000), crops=CROPS):
    return config_from_dict({"data": {"rates": list(rates), "split": [0.5, 0.25, 0.25]},
                             "stages": [{"crop": c} for c in crops]})


CFG = small_cfg()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """8 tracks of 2.5 s or 5 s in two genres; the 'a' genre has MIDI scores."""
    root = tmp_path_factory.mktemp("ds")
    inputs = []
    for g in ("a", "b"):
        for i in range(4):
            seconds = 2.5 if i % 2 else 5.0
            wav = write_wav(root / "raw" / g / f"t{i}.wav", tone(seconds, 16000, 200 + 60 * i) * (0.3 + 0.1 * i))
            midi = None
            if g == "a":
                midi = write_midi(root / "raw" / g / f"t{i}.mid",
                                  [(48 + 3 * j, 0.23 * j, 0.23 * j + 0.2, 30 + 10 * j) for j in range(10)])
            inputs.append((wav, g, midi))
    tracks, bad = pp.process_all(inputs, root / "data", CFG.data)
    assert not bad
    write_dataset(root / "data", tracks, [], CFG.data)
    return root / "data"


def by_id(data_dir: Path) -> dict:
    return {t["id"]: t for t in load_manifest(data_dir)["tracks"]}


# ----------------------------------------------------------------------------- errors


def test_missing_and_empty_manifest(tmp_path, data_dir):
    with pytest.raises(DatasetError, match=r"no manifest.json \(run strata preprocess first\)"):
        load_manifest(tmp_path)
    atomic_write_json(tmp_path / "manifest.json", {"version": 1, "genres": [], "tracks": []})
    with pytest.raises(DatasetError, match="no tracks"):
        StageCrops(tmp_path, CFG, 0)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read"):
        load_manifest(tmp_path)


def test_empty_split_rate_mismatch_and_long_crop(tmp_path, data_dir):
    copy = tmp_path / "d"
    shutil.copytree(data_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for t in manifest["tracks"]:
        t["split"] = "train"
    atomic_write_json(copy / "manifest.json", manifest)
    with pytest.raises(DatasetError, match="split 'valid' is empty"):
        StageCrops(copy, CFG, 0, split="valid")
    with pytest.raises(DatasetError, match="split 'test' is empty"):
        next(iter_tracks(copy, CFG, 0, "test"))
    other = small_cfg(rates=(2000, 4000, 16000))
    with pytest.raises(DatasetError, match="stage 1's tier 4000 Hz is not in this dataset"):
        StageCrops(data_dir, other, 1)
    with pytest.raises(DatasetError, match="crop of 100000 samples is longer than every track in split 'train'"):
        StageCrops(data_dir, small_cfg(crops=[400, 800, 100000]), 2)


# ----------------------------------------------------------------------------- crops


@pytest.mark.parametrize("stage,context", [(0, 0), (1, 37), (2, 100)])
def test_crops_are_aligned(data_dir, stage, context):
    ds = StageCrops(data_dir, CFG, stage, split="train", context=context, seed=7, length=40)
    tracks = by_id(data_dir)
    rate = CFG.data.rates[stage]
    f = rate // CFG.data.rates[stage - 1] if stage else 1
    hop = rate // CFG.data.roll_fps
    L = context + CROPS[stage]
    for i in range(len(ds)):
        item = ds[i]
        pos, start = ds.locate(i)
        t = tracks[ds.tracks[pos]["id"]]
        assert start % np.lcm(f, hop) == 0
        tier = load_npy(data_dir / t["tiers"][str(rate)])
        assert item["x"].dtype == torch.int64 and item["x"].shape == (L,)
        np.testing.assert_array_equal(item["x"].numpy(), tier[start : start + L])
        if stage > 0:
            below = load_npy(data_dir / t["tiers"][str(CFG.data.rates[stage - 1])])
            assert item["below"].shape == (L // f,)
            np.testing.assert_array_equal(item["below"].numpy(), below[start // f : start // f + L // f])
        else:
            assert "below" not in item
        frames = L * CFG.data.roll_fps // rate
        assert item["roll"].dtype == torch.float32 and item["roll"].shape == (256, frames)
        assert item["genre"].dtype == torch.int64 and int(item["genre"]) == t["genre_id"]
        if t["roll"]:
            roll = load_npy(data_dir / t["roll"])
            want = roll[:, :, start // hop : start // hop + frames].reshape(256, frames) / 127.0
            np.testing.assert_allclose(item["roll"].numpy(), want, rtol=1e-6)
            assert item["has_roll"] is True
        else:
            assert item["has_roll"] is False and not item["roll"].any()


@pytest.mark.parametrize("stage", [1, 2])
def test_crops_have_a_right_margin(data_dir, stage):
    """below / roll reach ``margin`` samples past the crop while the track continues; past its real
    end they are padding (silence) and cond_len stops at the end."""
    rate, f = CFG.data.rates[stage], CFG.data.rates[stage] // CFG.data.rates[stage - 1]
    hop = rate // CFG.data.roll_fps
    ds = StageCrops(data_dir, CFG, stage, context=160, seed=2, length=60, margin=2 * hop)
    L, M = 160 + CROPS[stage], 2 * hop  # whole alignment units, as training uses them
    tracks = by_id(data_dir)
    starts = [ds.locate(i) for i in range(len(ds))]
    ends = track_ends(data_dir, CFG, stage, "train", L, M)
    cases = [(ds[i], ds.tracks[pos], start) for i, (pos, start) in enumerate(starts)]
    unit = np.lcm(f, hop)
    cases += [(it, t, t["samples"][str(rate)] // unit * unit - L) for it, t in zip(ends, ds.data.tracks)]
    for item, t, start in cases:
        t = tracks[t["id"]]
        n = t["samples"][str(rate)]
        known = min(L + M, n - start)
        assert item["x"].shape == (L,) and int(item["cond_len"]) == known
        below = load_npy(data_dir / t["tiers"][str(CFG.data.rates[stage - 1])])
        want = np.full((L + M) // f, CFG.data.classes // 2)
        want[: known // f] = below[start // f : (start + known) // f]
        np.testing.assert_array_equal(item["below"].numpy(), want)
        assert item["roll"].shape == (256, (L + M) // hop)
        if t["roll"]:
            roll = load_npy(data_dir / t["roll"])[:, :, start // hop : (start + known) // hop].reshape(256, -1)
            np.testing.assert_allclose(item["roll"].numpy()[:, : known // hop], roll / 127.0, rtol=1e-6)
        assert not item["roll"][:, known // hop:].any()
    assert any(int(c[0]["cond_len"]) == L + M for c in cases)  # the track continues: real values
    assert len(ends) == len(ds.data.tracks) and all(int(it["cond_len"]) < L + unit for it in ends)  # the real end
    with pytest.raises(ValueError, match="margin"):
        StageCrops(data_dir, CFG, stage, margin=hop + 1)


def test_roll_frames_follow_the_audio(data_dir):
    """Frame g of the crop's roll covers samples [g*hop, (g+1)*hop) of the crop's x."""
    ds = StageCrops(data_dir, CFG, 2, seed=1, length=200)
    hop = 16000 // CFG.data.roll_fps
    for i in range(len(ds)):
        pos, start = ds.locate(i)
        if not ds.tracks[pos]["roll"]:
            continue
        item = ds[i]
        g = int(start // hop)
        onsets = load_npy(data_dir / ds.tracks[pos]["roll"])[1].max(axis=0)  # (F,) onset velocity
        crop_onsets = item["roll"].numpy()[128:].max(axis=0) * 127  # channel 1 of the crop
        np.testing.assert_allclose(crop_onsets, onsets[g : g + item["roll"].shape[1]], atol=1e-4)


def test_seeded_and_order_free(data_dir):
    a = StageCrops(data_dir, CFG, 1, seed=3, length=50)
    b = StageCrops(data_dir, CFG, 1, seed=3, length=50)
    c = StageCrops(data_dir, CFG, 1, seed=4, length=50)
    order = list(range(50))[::-1]
    items_b = {i: b[i] for i in order}
    for i in range(50):
        assert torch.equal(a[i]["x"], items_b[i]["x"]) and torch.equal(a[i]["below"], items_b[i]["below"])
    assert any(a.locate(i) != c.locate(i) for i in range(50))
    with pytest.raises(IndexError):
        a[50]


def test_tracks_drawn_by_length(data_dir):
    ds = StageCrops(data_dir, CFG, 0, seed=0, length=4000)
    lengths = np.array([t["samples"]["2000"] for t in ds.tracks], dtype=float)
    counts = np.bincount([ds.locate(i)[0] for i in range(len(ds))], minlength=len(ds.tracks))
    np.testing.assert_allclose(counts / counts.sum(), lengths / lengths.sum(), atol=0.03)


def test_dataloader_batches(data_dir):
    ds = StageCrops(data_dir, CFG, 1, context=16, seed=0, length=16)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert batch["x"].shape == (8, 816) and batch["below"].shape == (8, 204)
    assert batch["roll"].shape == (8, 256, 816 * 100 // 8000) and batch["genre"].shape == (8,)
    assert batch["has_roll"].dtype == torch.bool


# ----------------------------------------------------------------------------- whole tracks


def test_iter_tracks_whole(data_dir):
    tracks = by_id(data_dir)
    seen = []
    for item in iter_tracks(data_dir, CFG, 1, "train"):
        t = tracks[item["id"]]
        seen.append(item["id"])
        x = load_npy(data_dir / t["tiers"]["8000"])
        np.testing.assert_array_equal(item["x"].numpy(), x)
        np.testing.assert_array_equal(item["below"].numpy(), load_npy(data_dir / t["tiers"]["2000"]))
        assert item["roll"].shape == (256, len(x) * 100 // 8000)
        assert item["has_roll"] == (t["roll"] is not None)
        assert item["seconds"] == pytest.approx(t["seconds"])
        assert int(item["genre"]) == t["genre_id"]
    assert sorted(seen) == sorted(i for i, t in tracks.items() if t["split"] == "train")
