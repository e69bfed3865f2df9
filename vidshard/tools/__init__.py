"""Tools that look at shards without changing them: inspect and ls (survey.py), show (preview.py), verify."""
