"""vidshard's reader: stream chunk samples from shards.

`streaming.format` (the sample format shared with the writer) stays importable without
torch; the dataset itself is loaded on first use.
"""
