"""The corpus: audio, MIDI, raw-input discovery, preprocessing, the manifest, datasets, crops and model
inputs, the demo corpus, transcription and score events.  Imports only the base (``pipeline/*.py``)."""
