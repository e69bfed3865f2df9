"""Names vulture cannot see used, each for a reason: run it with this file,

    python -m vulture --min-confidence 60 streaming/ shardwriter/ vidshard/ .vulture_whitelist.py

Everything else it reports at 60% confidence is dead code to delete.
"""
# ruff: noqa
_ = object()

# Protocols called by others: the module's lazy attributes (PEP 562), file objects' readable()
# (io.BufferedReader, tarfile and zipfile ask), torch modules' forward().
__getattr__  # streaming/__init__.py
_.readable  # streaming/handles.py, ranges.py, tario.py
_.tell  # streaming/ranges.py, tario.py (io.BufferedReader and tarfile ask)
_.forward  # vidshard/train/model.py

# Attributes set for libraries to read: PyAV frames and codec contexts, tarfile headers, an
# fsspec file's closed flag, a torch sampler's generator.
_.pict_type  # shardwriter/encode.py
_.thread_type  # shardwriter/encode.py, vidshard/bench/cases.py
_.thread_count  # streaming/decode.py
_.mtime  # shardwriter/spool.py
_.gname  # shardwriter/spool.py
_.uname  # shardwriter/spool.py
_.closed  # shardwriter/store.py
_.generator  # vidshard/train/data.py

# Public API for users (docs/streaming.md, docs/training.md, docs/source-layout.md), used by tests.
_.indices_of  # streaming/mapped.py: VideoShardMapDataset.indices_of
frame_counts  # streaming/resume.py
read_barcode  # vidshard/synth.py

# A key of the original's YAML configs: accepted (those configs load unchanged) and checked to be a
# string, but read and shown by nothing here.
experiment  # vidshard/train/config.py
