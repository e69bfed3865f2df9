"""Bad source input: each case names the file and the reason; `fail` writes nothing,
`skip` finishes the job and lists every skipped video in errors.json."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess

import av
import numpy as np
import pytest

from vidshard.cli import main
from shardwriter.errors import WriterError

from ..helpers import read_dataset, write

VID = "session_001"


def video(src, view="front"):
    return os.path.join(src, "videos", VID, f"{view}.mp4")


def annotation(src, timeline=None, raw=None):
    path = os.path.join(src, "annotations", f"{VID}.json")
    with open(path, "w") as f:
        f.write(raw if raw is not None else json.dumps({"timeline": timeline}))
    return path


def kpt(src, frame, view="left"):
    return os.path.join(src, "keypoints", VID, view, f"{frame:06d}_sam3d_body.npz")


def missing_view(src):
    os.remove(video(src, "left"))
    return os.path.join(src, "videos", VID, "left.*"), "missing view file"


def corrupt_video(src):
    with open(video(src), "wb") as f:  # seeded: some random bytes probe as a format without video (another message)
        f.write(random.Random(0).randbytes(5000))
    return video(src), "unreadable or corrupt video"


def zero_frames(src):
    os.remove(video(src))
    path = os.path.join(src, "videos", VID, "front.avi")  # AVI keeps a video track with no frames
    with av.open(path, "w") as out:
        s = out.add_stream("mpeg4", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()
    return path, "zero-frame video"


def unequal_views(src):
    path = video(src, "right")
    tmp = path + ".tmp.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-frames:v", "60", tmp], check=True)
    os.replace(tmp, path)
    for frame in range(60, 75):  # that camera stopped early: no keypoints past its end either
        if os.path.exists(kpt(src, frame, "right")):
            os.remove(kpt(src, frame, "right"))
    return os.path.join(src, "videos", VID), r"different frame counts \(front=75, left=75, right=60\)"


def no_annotation(src):
    path = annotation(src)
    os.remove(path)
    return path, "missing annotation JSON"


def bad_json(src):
    return annotation(src, raw="{not json"), "invalid annotation JSON"


def segment(timeline, reason):
    return lambda src: (annotation(src, timeline), reason)


def kpt_past_end(src):
    np.savez(kpt(src, 75), joints_2d=np.zeros((17, 2), np.float32), frame=np.int64(75))
    return kpt(src, 75), "keypoints for frame 75, but the video has 75 frames"


def kpt_shape_change(src):
    np.savez(kpt(src, 40), joints_2d=np.zeros((18, 2), np.float32), frame=np.int64(40))
    return kpt(src, 40), r"shape \(18, 2\).*shapes/dtypes must not change"


def kpt_dtype_change(src):
    np.savez(kpt(src, 41), joints_2d=np.zeros((17, 2), np.float64), frame=np.int64(41))
    return kpt(src, 41), r"dtype <f8.*shapes/dtypes must not change"


def kpt_pickle(src):
    np.savez(kpt(src, 42), joints_2d=np.array([object()], dtype=object), frame=np.int64(42))
    return kpt(src, 42), "unreadable keypoint file.*allow_pickle"


def kpt_structured(src):
    """Every file of the kind holds a structured array: the first one fixes the schema, which
    index.json could not describe ('|V8'), so the probe refuses it naming that file."""
    folder = os.path.dirname(kpt(src, 0))
    for name in os.listdir(folder):
        np.savez(os.path.join(folder, name), joints_2d=np.zeros(17, [("x", "<f4"), ("y", "<f4")]), frame=np.int64(0))
    first = os.path.join(folder, sorted(os.listdir(folder))[0])
    return first, r"joints_2d.*index.json cannot describe"


def view_symlink_loop(src):
    os.remove(video(src))
    os.symlink("front.mp4", video(src))  # points at itself: ELOOP on open and stat
    return video(src), "symbolic links"


def folder_symlink_loop(src):
    os.rename(os.path.join(src, "videos", VID), os.path.join(src, "videos", "elsewhere"))
    os.symlink(VID, os.path.join(src, "videos", VID))
    return os.path.join(src, "videos", VID), "cannot list the video folder.*symbolic links"


def annotation_is_a_folder(src):
    path = annotation(src)
    os.remove(path)
    os.mkdir(path)
    return path, "cannot read the annotation JSON.*directory"


def bad_id(src):
    old = os.path.join(src, "videos", VID)
    new = os.path.join(src, "videos", "session.001")
    os.rename(old, new)
    return new, "video id cannot form a sample key"


CASES = {
    "missing_view": missing_view,
    "corrupt_video": corrupt_video,
    "zero_frames": zero_frames,
    "unequal_views": unequal_views,
    "no_annotation": no_annotation,
    "bad_json": bad_json,
    "segment_outside": segment([{"start": 70, "end": 80, "label": "a"}], "outside the video's 75 frames"),
    "segment_empty": segment([{"start": 9, "end": 9, "label": "a"}], "end 9 <= start 9"),
    "segment_overlap": segment([{"start": 0, "end": 9, "label": "a"}, {"start": 5, "end": 12, "label": "b"}], "overlaps"),
    "segment_unsorted": segment([{"start": 20, "end": 30, "label": "a"}, {"start": 0, "end": 5, "label": "b"}], "overlaps or precedes"),
    "segment_label": segment([{"start": 0, "end": 9, "label": 7}], "label must be a non-empty string"),
    "kpt_past_end": kpt_past_end,
    "kpt_shape_change": kpt_shape_change,
    "kpt_dtype_change": kpt_dtype_change,
    "kpt_pickle": kpt_pickle,
    "bad_id": bad_id,
    "kpt_structured": kpt_structured,
    "view_symlink_loop": view_symlink_loop,
    "folder_symlink_loop": folder_symlink_loop,
    "annotation_is_a_folder": annotation_is_a_folder,
}


@pytest.mark.parametrize("case", CASES)
def test_fail_names_file_and_reason_and_writes_nothing(source_copy, tmp_path, case):
    path, reason = CASES[case](source_copy)
    out = str(tmp_path / "out")
    with pytest.raises(WriterError) as info:
        write(source_copy, out)
    message = str(info.value)
    assert path in message, message
    assert re.search(reason, message), message
    assert not [n for n in os.listdir(out) if not n.startswith(".")]  # no shard, no index


@pytest.mark.parametrize("case", ["corrupt_video", "kpt_shape_change", "segment_overlap", "bad_id", "kpt_structured",
                                  "view_symlink_loop", "annotation_is_a_folder"])
def test_skip_finishes_and_reports(source_copy, tmp_path, case):
    path, reason = CASES[case](source_copy)
    out = str(tmp_path / "out")
    report = write(source_copy, out, on_error="skip")
    assert report.videos == 2 and len(report.skipped) == 1
    index, samples = read_dataset(out)
    assert index["skipped"] == 1 and index["totals"]["videos"] == 2
    assert not any(k.startswith("session_001") for k in samples)
    skipped = json.load(open(os.path.join(out, "errors.json")))["skipped"]
    assert len(skipped) == 1 and skipped[0]["path"] == path
    assert re.search(reason, skipped[0]["reason"])


def test_truncate_views_writes_the_shortest(source_copy, tmp_path):
    unequal_views(source_copy)
    out = str(tmp_path / "out")
    write(source_copy, out, truncate_views=True)
    _, samples = read_dataset(out)
    metas = [json.loads(m["meta.json"]) for k, m in samples.items() if k.startswith(VID)]
    assert max(m["end_frame"] for m in metas) == 60
    assert metas[0]["source_view_frames"] == {"front": 75, "left": 75, "right": 60}


def test_cli_exit_code_and_message(source_copy, tmp_path, capsys):
    path, _ = missing_view(source_copy)
    code = main(["write", source_copy, str(tmp_path / "out"), "--max-video-frames", "30"])
    err = capsys.readouterr().err
    assert code == 2 and path in err and "missing view file" in err and "Traceback" not in err
