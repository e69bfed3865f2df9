"""vidshard ls / inspect / show on damaged and hostile shards (issue 21): each ends in exit
code 2 and one line naming shard, key and member, never a traceback; `show` refuses what the
reader refuses before it allocates; `vidshard ls | head` ends quietly."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile

import pytest

from streaming.errors import ShardFormatError
from streaming.tario import Limits
from vidshard.cli import main
from vidshard.tools.preview import show

from ..helpers import VIEWS
from ..streaming.hostile_shards import GiB, change_first, long_name_chain, meta_with, pax_sparse_map_not_numbers, replace
from ..streaming.sandbox import isolated


def cut_inside_clip(path: str) -> str:
    """Shard 0 cut in the middle of its second sample's front.mp4 data, as an interrupted
    copy leaves it; that sample's key (its member front.mp4 is where the bytes end)."""
    shard = os.path.join(path, "shard-000000.tar")
    key = json.load(open(os.path.join(path, "index.json")))["shardlist"][0]["samples"][1]["key"]
    with tarfile.open(shard) as tar:
        clip = tar.getmember(f"{key}.front.mp4")
    with open(shard, "r+b") as f:
        f.truncate(clip.offset_data + clip.size // 2)
    return key


def without_meta(key, mine):
    return [(name, data) for name, data in mine if name != f"{key}.meta.json"]


# (id, how to break a copy -> the broken key, the member the error must name, reason)
CASES = [
    ("truncated-shard", cut_inside_clip, "front.mp4", r"not a readable tar.* \(ReadError: unexpected end of data\)"),
    ("json-nested-200000-deep", lambda p: change_first(p, replace("meta.json", lambda k, d: b"[" * 200_000 + b"]" * 200_000)),
     "meta.json", r"meta\.json is not valid JSON \(RecursionError"),
    ("meta-fps-0", lambda p: change_first(p, replace("meta.json", meta_with(fps=0))), "meta.json",
     r"meta\.json fps 0 disagrees with its fps_rational '30/1'"),
    ("meta-fps-and-fps-rational-0", lambda p: change_first(p, replace("meta.json", meta_with(fps=0, fps_rational="0/1"))),
     "meta.json", r"meta\.json fps_rational '0/1' is not a frame rate"),
    ("timeline-segments-not-a-list", lambda p: change_first(p, replace("timeline.json", lambda k, d: b'{"segments": 7}')),
     "timeline.json", r"timeline\.json must be an object with a 'segments' list"),
    ("meta-json-missing", lambda p: change_first(p, without_meta), "meta.json", r"sample has no meta\.json member"),
]


@pytest.fixture
def copy(small_dataset, tmp_path):
    dst = str(tmp_path / "ds")
    shutil.copytree(small_dataset, dst)
    return dst


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `vidshard ARGV` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def tool_argv(tool: str, path: str, key: str, png: str) -> list[str]:
    return {"ls": ["ls", path], "inspect": ["inspect", path], "show": ["show", path, "--key", key, "--out", png]}[tool]


@pytest.mark.parametrize("tool", ["ls", "inspect", "show"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_tool_on_a_bad_shard_exits_2_naming_shard_key_and_member(copy, tmp_path, tool, case):
    _, breaks, member, reason = case
    key = breaks(copy)
    png = str(tmp_path / "p.png")
    code, _, err = run_cli(tool_argv(tool, copy, key, png))
    assert code == 2 and err.startswith(f"vidshard {tool}: error: ") and err.count("\n") == 1, err
    assert re.search(reason, err), err
    assert "shard-000000.tar" in err and f"key={key}," in err and f"member={key}.{member}" in err, err
    assert not os.path.exists(png)


@pytest.mark.parametrize("tool", ["ls", "inspect", "show"])
def test_tool_on_a_shard_cut_between_samples_exits_2_naming_the_first_lost(copy, tmp_path, tool):
    """Cut where the second sample's first header begins (a copy stopped at a 512-byte
    boundary): tarfile takes it for the archive's end, so only index.json can tell."""
    shard = json.load(open(os.path.join(copy, "index.json")))["shardlist"][0]
    lost = shard["samples"][1]
    with open(os.path.join(copy, "shard-000000.tar"), "r+b") as f:
        f.truncate(lost["offset"])
    code, _, err = run_cli(tool_argv(tool, copy, lost["key"], str(tmp_path / "p.png")))
    assert code == 2 and err.startswith(f"vidshard {tool}: error: ") and err.count("\n") == 1, err
    assert "shard-000000.tar" in err and f"key={lost['key']}" in err, err
    if tool != "show":  # show reads the sample's own byte range: nothing of it is left
        assert f"the shard ends after 1 samples, index.json lists {len(shard['samples'])}" in err, err


@pytest.mark.parametrize("tool", ["ls", "inspect", "show"])
@pytest.mark.parametrize("breaks, reason", [(pax_sparse_map_not_numbers, r"not a readable tar \(ValueError"),
                                            (long_name_chain, r"not a readable tar \(RecursionError")],
                         ids=["pax-sparse-map-not-numbers", "long-name-chain-of-3000"])
def test_tool_on_unreadable_tar_records_names_the_sample_they_open(copy, tmp_path, tool, breaks, reason):
    """Records in front of the first sample that tarfile cannot parse: no member header is
    read, so only index.json can say which sample they open."""
    key = breaks(copy)
    code, _, err = run_cli(tool_argv(tool, copy, key, str(tmp_path / "p.png")))
    assert code == 2 and err.startswith(f"vidshard {tool}: error: ") and err.count("\n") == 1, err
    assert re.search(reason, err) and "shard-000000.tar" in err and f"key={key}" in err, err


def claim_views(path: str, side: int) -> str:
    """The first sample's meta.json claims side x side views (its clips are 64 x 48); its key."""
    return change_first(path, replace("meta.json", meta_with(view_sizes={v: {"height": side, "width": side} for v in VIEWS})))


def test_show_refuses_4096_squared_views_before_allocating(copy, tmp_path):
    """meta.json claims 4096 x 4096 views: the reader refuses the sample (the clip's header
    disagrees) before it decodes a frame. `show` drew it: +1.7 GB of RSS here, 12 s."""
    key = claim_views(copy, 4096)
    png = str(tmp_path / "big.png")
    outcome = isolated(run_cli, tool_argv("show", copy, key, png), timeout=60)  # no address-space cap
    assert outcome.kind == "ok", outcome
    assert outcome.grown < GiB, f"show grew by {outcome.grown >> 20} MiB"
    code, _, err = outcome.value
    assert code == 2 and f"key={key}," in err and f"member={key}.front.mp4" in err, err
    assert re.search(r"clip header disagrees with meta\.json: height 48 \(meta\.json: 4096\), width 64", err), err
    assert outcome.seconds < 10 and not os.path.exists(png)


def test_show_refuses_views_past_max_frame_pixels(copy, tmp_path):
    """Views over Limits.max_frame_pixels are refused from meta.json's claim, as the reader
    refuses them (a tight limit keeps the case small: past the default of 8192 x 8192 a broken
    check allocates tens of GB)."""
    key = claim_views(copy, 256)
    with pytest.raises(ShardFormatError, match="clip size 256x256 is outside the limit of 16384 pixels") as info:
        show(copy, key, str(tmp_path / "big.png"), limits=Limits(max_frame_pixels=128 * 128))
    assert info.value.shard.endswith("shard-000000.tar") and info.value.key == key
    assert info.value.member == f"{key}.meta.json" and not os.path.exists(tmp_path / "big.png")


def test_ls_into_head_ends_quietly(copy):
    """`vidshard ls | head -1` on a listing far longer than a pipe holds (10,000 extra
    members, 400 KB of lines): ls is still writing when head exits, and stops without a
    BrokenPipeError traceback."""
    change_first(copy, lambda key, mine: mine + [(f"{key}.x{i:05d}.bin", b"") for i in range(10_000)])
    command = f"{shlex.quote(sys.executable)} -m vidshard ls {shlex.quote(copy)} | head -1"
    done = subprocess.run(["bash", "-c", f"{command}; exit ${{PIPESTATUS[0]}}"], capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("shard-000000.tar  ") and done.stdout.count("\n") == 1, done.stdout[:200]
    assert done.stderr == "" and done.returncode == 141, (done.returncode, done.stderr[-2000:])


def test_inspect_into_a_closed_pipe_ends_quietly(small_dataset):
    """`vidshard inspect | true`: the reader is gone long before inspect (a second of imports)
    writes its one report, and inspect stops without a BrokenPipeError traceback."""
    command = f"{shlex.quote(sys.executable)} -m vidshard inspect {shlex.quote(small_dataset)} --json | true"
    done = subprocess.run(["bash", "-c", f"{command}; exit ${{PIPESTATUS[0]}}"], capture_output=True, text=True, timeout=60)
    assert done.stderr == "" and done.returncode == 141, (done.returncode, done.stderr[-2000:])
