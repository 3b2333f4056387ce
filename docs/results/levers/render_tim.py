"""Render the test split of /work/exp/data (and valid) with the other soundfont (TimGM6mb): audio of another kind."""
import json, shutil, sys
from pathlib import Path
import os; sys.path.insert(0, os.environ.get("CODE", "/work/exp/code"))
import mido
from pipeline.midi import render_midi
m = json.load(open("/work/exp/data/manifest.json"))
for t in m["tracks"]:
    if t["split"] != "test":
        continue
    src = Path(t["midi"]); out = Path("/work/exp/raw_tim") / t["genre"]; out.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, out / src.name)  # already cropped and program-set by the demo corpus builder
    render_midi(src, out / (src.stem + ".wav"), sr=16000, soundfont="/usr/share/sounds/sf2/TimGM6mb.sf2")
    print(out / src.name)
