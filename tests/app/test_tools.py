"""vidshard inspect / ls / show on a small written dataset, checked against the source."""

from __future__ import annotations

import collections
import json
import os
import re
from fractions import Fraction

import numpy as np
from PIL import Image

from vidshard.cli import main
from vidshard.synth import ViewQuirks, keypoint_missing, read_barcode, synth_source, write_video
from vidshard.tools.preview import layout, show
from vidshard.tools.survey import survey

from ..helpers import VIEWS, read_dataset, write
from ..recordings import display_frames, psnr


def test_inspect_matches_manifest_and_source(small_dataset, small_source, capsys):
    report = survey(small_dataset)
    index = json.load(open(os.path.join(small_dataset, "index.json")))
    for field in ("videos", "chunks", "frames", "shards", "bytes", "segments"):
        assert report["totals"][field] == index["totals"][field]
    assert report["totals"]["hours"] == round(3 * 75 / 30 / 3600, 4)
    want = collections.defaultdict(lambda: {"segments": 0, "frames": 0})
    for name in os.listdir(os.path.join(small_source, "annotations")):
        for seg in json.load(open(os.path.join(small_source, "annotations", name)))["timeline"]:
            want[seg["label"]]["segments"] += 1
            want[seg["label"]]["frames"] += seg["end"] - seg["start"]
    assert report["labels"] == dict(want)  # the histogram equals the source timelines
    assert sum(report["chunk_lengths"].values()) == 9 and set(report["chunk_lengths"]) == {30, 27}
    assert report["clipped_segments"] == index["totals"]["chunk_segments"]
    for v, view in enumerate(VIEWS):  # overlap counts shared frames twice, as the chunks hold them
        chunks = [(0, 30), (24, 54), (48, 75)]
        have = sum(not keypoint_missing(f, v) for a, b in chunks for f in range(a, b))
        assert report["keypoint_coverage"][view] == round(have / sum(b - a for a, b in chunks), 4)
    assert main(["inspect", small_dataset, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["chunks"] == 9
    assert main(["inspect", small_dataset, "--shards"]) == 0
    text = capsys.readouterr().out
    assert "9 chunks" in text and "shard-000000.tar" in text


def test_ls_lists_every_member(small_dataset, capsys):
    _, samples = read_dataset(small_dataset)
    assert main(["ls", small_dataset]) == 0
    text = capsys.readouterr().out
    for key, members in samples.items():
        for suffix, data in members.items():
            assert f"{len(data):>10}  {key}.{suffix}" in text
    assert main(["ls", small_dataset, "--key", "session_001_00002"]) == 0
    one = capsys.readouterr().out
    assert "video session_001 frames [48, 75)" in one and one.count(".mp4") == 3


def test_show_tiles_hold_the_stamped_frames(small_dataset, tmp_path):
    out = str(tmp_path / "p.png")
    key = show(small_dataset, "session_002_00001", out, columns=5, keypoints=False)
    image = np.asarray(Image.open(out).convert("RGB"))
    lay = layout(5, [(64, 48)] * 3)
    assert key == "session_002_00001" and image.shape[:2] == (lay.size[1], lay.size[0])
    shown = np.unique(np.linspace(0, 29, 5).round().astype(int)) + 24  # chunk [24, 54)
    for v in range(3):
        for c, frame in enumerate(shown):
            x0, y0, x1, y1 = lay.box(v, c)
            assert read_barcode(image[y0:y1, x0:x1]) == (frame, v)


def test_show_keeps_each_views_shape(tmp_path):
    """A phone held upright among landscape views: its tiles are portrait and hold the frames
    as the FFmpeg CLI displays the source, not squashed to the first view's size."""
    src = str(tmp_path / "src")
    synth_source(src, videos=1, frames=12, views=("front", "phone"), size=(64, 48), keypoints=False)
    folder = os.path.join(src, "videos", "session_000")
    # Stored 64x48 sideways with a display matrix, shown 48x64: what a phone writes.
    write_video(os.path.join(folder, "phone.mp4"), 1, 12, (48, 64), Fraction(30), quirks=ViewQuirks(rotate=90))
    out = str(tmp_path / "out")
    write(src, out, max_video_frames=12)
    png = str(tmp_path / "s.png")
    show(out, "session_000_00000", png, columns=4, keypoints=False)
    image = np.asarray(Image.open(png).convert("RGB"))
    lay = layout(4, [(64, 48), (48, 64)])
    assert image.shape[:2] == (lay.size[1], lay.size[0])
    shown = np.unique(np.linspace(0, 11, 4).round().astype(int))
    for v, view in enumerate(("front", "phone")):
        reference = display_frames(os.path.join(folder, f"{view}.mp4"))
        for c, frame in enumerate(shown):
            x0, y0, x1, y1 = lay.box(v, c)
            tile = image[y0:y1, x0:x1]
            assert read_barcode(tile) == (frame, v)
            want = reference[frame].repeat(lay.scale, axis=0).repeat(lay.scale, axis=1)
            assert psnr(tile, want) > 30, (view, frame, psnr(tile, want))


def test_show_draws_keypoints_where_present(small_dataset, tmp_path):
    out = str(tmp_path / "k.png")
    show(small_dataset, "session_000_00000", out, columns=30)  # every frame of chunk [0, 30)
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    lay = layout(30, [(64, 48)] * 3)
    for v in range(3):
        for frame in range(30):
            x0, y0, x1, y1 = lay.box(v, frame)
            tile = image[y0:y1, x0:x1]
            red = ((tile[..., 0] > 200) & (tile[..., 1] < 100)).sum()
            assert (red > 0) == (not keypoint_missing(frame, v)), (v, frame)


def test_random_sample_and_missing_key(small_dataset, tmp_path, capsys):
    out = str(tmp_path / "r.png")
    assert main(["show", small_dataset, "--out", out]) == 0
    assert os.path.getsize(out) > 0 and "sample session_" in capsys.readouterr().out
    assert main(["show", small_dataset, "--key", "nope_00000", "--out", out]) == 2
    assert "no sample 'nope_00000'" in capsys.readouterr().err


def show_cli(path: str, out: str, key: str) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["show", path, "--key", key, "--out", out])
    return code, err.getvalue()


def test_show_refuses_hostile_keypoints_naming_shard_and_key(small_dataset, tmp_path):
    """`vidshard show` reads keypoint archives as the reader does: a 200-byte header declaring
    10**12 entries (np.load allocates it), entries declaring 1 GiB uncompressed, and a 3 MB
    deflate bomb of 1 GiB per entry (refused from its tar header: more bytes than index.json's
    schema allows) end in exit code 2 and a message naming shard, key and member, in a child
    capped at 1 GiB, without a MemoryError."""
    import shutil

    from ..streaming.hostile_shards import change_first, deflate_bomb, npz_declaring_huge_shape, replace, zip_declaring_1gib
    from ..streaming.sandbox import isolated

    for name, hostile, reason in (("header", npz_declaring_huge_shape, r"declares shape \(1000000000000,\)"),
                                  ("declared", zip_declaring_1gib, "declares 1073741824 bytes uncompressed"),
                                  ("bomb", deflate_bomb, r"member declares \d+ bytes, over the limit of \d+")):
        copy = str(tmp_path / name)
        shutil.copytree(small_dataset, copy)
        key = change_first(copy, replace("front.kpt.npz", hostile))
        outcome = isolated(show_cli, copy, str(tmp_path / f"{name}.png"), key, timeout=60)
        assert outcome.kind == "ok", outcome
        code, err = outcome.value
        assert code == 2 and err.startswith("vidshard show: error: "), err
        assert re.search(reason, err) and "shard-000000.tar" in err and f"key={key}" in err and "front.kpt.npz" in err, err
        assert "MemoryError" not in err and not os.path.exists(tmp_path / f"{name}.png")
        assert outcome.peak_rss < 1 << 30


def verify_problems(path: str) -> list[str]:
    from vidshard.tools.verify import verify

    return verify(path)[0]


def test_verify_reads_hostile_keypoints_as_the_reader_does(small_dataset, tmp_path):
    """`vidshard verify` reads keypoint archives with the reader's guarded npz reading: a
    200-byte header declaring 10**12 entries and a 785-byte bzip2 bomb of 1 GiB are reported
    as problems naming shard, key and member, in a child capped at 1 GiB (np.load allocated)."""
    import shutil

    from ..streaming.sandbox import isolated
    from ..streaming.hostile_shards import bzip2_bomb, change_first, npz_declaring_huge_shape, replace

    for name, hostile, reason in (("header", npz_declaring_huge_shape, r"declares shape \(1000000000000,\)"),
                                  ("bzip2", bzip2_bomb, "compression method 12 is not read")):
        copy = str(tmp_path / name)
        shutil.copytree(small_dataset, copy)
        key = change_first(copy, replace("front.kpt.npz", hostile))
        outcome = isolated(verify_problems, copy)
        assert outcome.kind == "ok", outcome
        found = [p for p in outcome.value if f"key={key}" in p and "front.kpt.npz" in p]
        assert len(found) == 1 and re.search(reason, found[0]) and "shard-000000.tar" in found[0], outcome.value
        assert outcome.peak_rss < 1 << 30


def test_verify_decode_reports_a_clip_without_video(small_dataset, tmp_path):
    """An mp4 holding only an audio stream is a problem named by `verify --decode`, not an
    IndexError traceback."""
    import io
    import shutil

    import av

    from vidshard.tools.verify import verify

    from ..streaming.hostile_shards import change_first, replace

    def audio_only(key, data):
        buf = io.BytesIO()
        with av.open(buf, "w", format="mp4") as container:
            stream = container.add_stream("aac", rate=8000)
            stream.layout = "mono"
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 8000
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
        return buf.getvalue()

    copy = str(tmp_path / "ds")
    shutil.copytree(small_dataset, copy)
    key = change_first(copy, replace("front.mp4", audio_only))
    problems, _ = verify(copy, decode=True)
    assert [p for p in problems if key in p and "a clip holds exactly one video stream; this one holds audio" in p
            and "member=" + key + ".front.mp4" in p], problems


def test_inspect_shows_what_the_gop_costs(small_dataset, capsys):
    """Segment mode: the ratio the decoder itself counts over an epoch (ds.stats); clip mode:
    the rule over every window start of every chunk, by brute force."""
    from streaming import VideoShardDataset
    from streaming.decode import frames_decoded

    report = survey(small_dataset)
    cost = report["decode_cost"]
    assert cost["gop"] == [8]
    for n in (8, 16):
        ds = VideoShardDataset(small_dataset, sample="segment", num_frames=n, shuffle=False, img_size=(16, 16))
        for _ in ds:
            pass
        assert cost["segment"][n] == round(ds.stats["frames_decoded"] / ds.stats["frames_delivered"], 3)
        lengths = [length for length, count in report["chunk_lengths"].items() for _ in range(count)]
        per_chunk = [(sum(frames_decoded(range(s, s + n), 8) for s in range(length - n + 1)) / (length - n + 1), n)
                     for length in lengths]
        assert cost["clip"][n] == round(sum(d for d, _ in per_chunk) / sum(k for _, k in per_chunk), 3)
    assert main(["inspect", small_dataset]) == 0
    assert re.search(r"GOP 8: frames decoded per frame delivered .* segment mode \d\.\d\d \(8 frames\)", capsys.readouterr().out)
