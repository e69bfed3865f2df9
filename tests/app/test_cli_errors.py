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


def test_every_typed_error_of_the_reader_is_one_reader_error():
    from streaming.errors import DatasetError, DatasetNotFound, DatasetRefused, ReaderError, ResumeError
    from streaming.resume import ResumeMismatch

    assert issubclass(DatasetError, ReaderError) and issubclass(ResumeMismatch, ReaderError)
    assert issubclass(DatasetNotFound, FileNotFoundError) and issubclass(DatasetRefused, ValueError)
    assert issubclass(ResumeMismatch, ResumeError) and issubclass(ResumeError, ValueError)


def test_a_refused_resume_state_is_one_line(monkeypatch, tmp_path, capsys):
    import vidshard.tools.survey as survey
    from streaming.resume import ResumeMismatch

    def refused(source, key=None):
        raise ResumeMismatch("the resume state was saved with seed=0, this dataset has seed=1")

    monkeypatch.setattr(survey, "listing", refused)
    assert main(["ls", str(tmp_path)]) == 2
    assert "seed=0" in _one_line(capsys, "ls")


def test_the_reader_refuses_states_and_options_with_typed_errors(small_dataset, monkeypatch):
    from streaming import VideoShardDataset, VideoShardMapDataset
    from streaming.errors import DatasetRefused, ResumeError
    from streaming.resume import STATE_KEY
    from streaming.wds import WdsItems
    from streaming.world import World

    ds = VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True)
    with pytest.raises(ResumeError, match="not a VideoShardDataset state"):
        ds.load_state_dict({})
    ds.load_state_dict({STATE_KEY: 1, "spec": ds.spec(World()).to_json(), "rank": 0, "worker": 0, "yielded": 3, "owed": 0,
                        "last_good": None, "skipped": {}})
    monkeypatch.setattr(World, "detect", classmethod(lambda cls: World(rank=1, world_size=2)))
    with pytest.raises(ResumeError, match="saved by rank 0/1"):
        next(iter(ds))
    monkeypatch.setattr(World, "detect", classmethod(lambda cls: World(worker=0, num_workers=10_000)))
    with pytest.raises(DatasetRefused, match="fewer items than its 10000 DataLoader workers"):
        next(iter(VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True)))
    for option in ("shuffle_buffer", "shuffle_block"):
        with pytest.raises(DatasetRefused, match=option):
            VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True, **{option: "lots"})
    with pytest.raises(DatasetRefused, match="cache_limit"):
        VideoShardDataset(small_dataset, load_rgb=False, load_kpt=True, cache_dir="/tmp/unused-cache", cache_limit="lots")
    with pytest.raises(DatasetRefused, match="open_shards must be >= 1"):
        VideoShardMapDataset(small_dataset, load_rgb=False, load_kpt=True, open_shards=0)
    with pytest.raises(DatasetRefused, match="on_error"):
        WdsItems(on_error="ignore")
    with pytest.raises(DatasetRefused, match="no folder to find index.json"):
        WdsItems().of({"__key__": "a_0", "__url__": "pipe:cat x"})


@pytest.mark.parametrize("argv, message", [
    (["show", "{tmp}", "--frames", "0"], "must be >= 1"),
    (["synth", "{tmp}/src", "--fps", "abc"], "expected a frame rate"),
    (["synth", "{tmp}/src", "--fps", "0"], "must be positive"),
])
def test_bad_arguments_are_argparse_errors(tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_a_missing_remote_index_json_is_dataset_not_found(tmp_path, capsys):
    from streaming import VideoShardDataset
    from streaming.errors import DatasetNotFound
    from streaming.remote import StorageOptions

    from ..servers import HTTPFileServer

    with HTTPFileServer(str(tmp_path)) as server:
        url = f"http://user:secretpw@127.0.0.1:{server.port}/nope"
        with pytest.raises(DatasetNotFound, match="no such index.json") as raised:
            VideoShardDataset(url, storage=StorageOptions(retries=0))
        assert "secretpw" not in str(raised.value)
        for command in ("inspect", "ls", "verify"):
            assert main([command, url]) == 2
            assert "no such index.json" in _one_line(capsys, command)
    with pytest.raises(DatasetNotFound, match="no such index.json"):
        VideoShardDataset("memory://vidshard-test-nothing-here/ds")
