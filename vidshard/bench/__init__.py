"""`vidshard bench`: the harness (harness.py), one case per process (cases.py), reader sweeps and soak (reader.py)."""
