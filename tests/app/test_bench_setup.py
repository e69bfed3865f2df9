"""`vidshard bench` without its `bench` extra: the cases that read from a local S3 server
(moto) stop before any work with an error naming what is missing and the extra to install,
never a traceback from the middle of a run."""

from __future__ import annotations

import sys

import pytest

import vidshard.bench.harness
import vidshard.synth
from vidshard.cli import main


def no_work(*args, **kwargs):
    raise AssertionError("the bench started writing its data before checking what it needs")


@pytest.mark.parametrize("flags, missing", [(["--random-access"], "moto"), (["--random-access"], "boto3"),
                                            (["--shuffle"], "s3fs"), ([], "moto")])
def test_bench_without_the_s3_server_says_which_extra_to_install(monkeypatch, capsys, flags, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed (importlib.util.find_spec gives None)
    for module in (vidshard.synth, vidshard.bench.harness):
        monkeypatch.setattr(module, "synth_source", no_work)
    assert main(["bench", "--quick", *flags]) == 2
    err = capsys.readouterr().err
    assert f"needs {missing}:" in err and "pip install 'vidshard[bench]'" in err, err
    assert "Traceback" not in err
