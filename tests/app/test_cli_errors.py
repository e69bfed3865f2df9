"""The CLI says the typed errors of what was asked in one line (exit 2) and lets anything
else show as the bug it is: a KeyError from deep in a tool is not a user's mistake."""

from __future__ import annotations

import pytest

from vidshard.cli import main


def test_a_bug_in_a_tool_shows_as_one(monkeypatch, tmp_path):
    import vidshard.tools.survey as survey

    def broken(source, key=None):
        raise KeyError("timeline.json")  # what a tool's bug looked like: "error: 'timeline.json'"

    monkeypatch.setattr(survey, "listing", broken)
    with pytest.raises(KeyError, match="timeline.json"):
        main(["ls", str(tmp_path)])


@pytest.mark.parametrize("argv, message", [
    (["inspect", "{tmp}/none"], "no such index.json"),  # streaming.errors.DatasetNotFound
    (["ls", "{tmp}/none"], "no such index.json"),
    (["train", "--config", "{tmp}/none.yaml"], "no such config file"),  # vidshard.train.config.ConfigError
    (["write", "{tmp}/src", "{tmp}/out", "--max-video-frames", "0"], "--max-video-frames must be >= 1"),  # SettingError
])
def test_what_was_asked_is_refused_in_one_line(tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vidshard {argv[0]}: error: ") and message in err and err.count("\n") == 1, err
