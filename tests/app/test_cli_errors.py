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


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"vidshard {command}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "secretpw" not in err, err
    return err


def test_a_missing_shard_over_http_is_one_redacted_line(tmp_path, capsys):
    from ..servers import HTTPFileServer

    with HTTPFileServer(str(tmp_path)) as server:
        url = f"http://user:secretpw@127.0.0.1:{server.port}/nope/shard-000000.tar"
        assert main(["ls", url]) == 2
        err = _one_line(capsys, "ls")
        assert "shard-000000.tar" in err and "not found" in err, err


def test_a_deleted_shard_is_one_line_for_inspect_and_ls_and_a_problem_for_verify(small_dataset, tmp_path, capsys):
    import glob
    import os
    import shutil

    ds = str(tmp_path / "ds")
    shutil.copytree(small_dataset, ds)
    first = sorted(glob.glob(os.path.join(ds, "shard-*.tar")))[0]
    os.remove(first)
    for command in ("inspect", "ls"):
        assert main([command, ds]) == 2
        assert os.path.basename(first) in _one_line(capsys, command)
    assert main(["verify", ds]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {first}: missing" in out, out


def test_verify_over_http_names_a_missing_shard_without_credentials(small_dataset, tmp_path, capsys):
    import glob
    import os
    import shutil

    from ..servers import HTTPFileServer

    ds = str(tmp_path / "ds")
    shutil.copytree(small_dataset, ds)
    first = sorted(glob.glob(os.path.join(ds, "shard-*.tar")))[0]
    os.remove(first)
    with HTTPFileServer(str(tmp_path)) as server:
        assert main(["verify", f"http://user:secretpw@127.0.0.1:{server.port}/ds"]) == 1
    captured = capsys.readouterr()
    assert "secretpw" not in captured.out + captured.err and "Traceback" not in captured.err
    assert f"{os.path.basename(first)}: missing" in captured.out, captured.out
    assert "all checks hold" not in captured.out
