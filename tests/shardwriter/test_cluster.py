"""`vidshard write --engine ray` on a two-node Ray cluster (ray.cluster_utils.Cluster, as Ray's
own tests do) writing to an S3 server (moto): the driver, started in an empty folder with
an empty HOME and no PYTHONPATH, only plans. The dataset is the local engine's byte for
byte, streams back frame-exactly, the driver's own I/O is a small fraction of it and its
memory does not grow with it; the driver killed mid-run resumes to the same bytes."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import sys
import time

import pytest

ray = pytest.importorskip("ray")

from streaming import VideoShardDataset  # noqa: E402
from vidshard.cli import main  # noqa: E402
from vidshard.synth import read_barcode, synth_source  # noqa: E402

from ..helpers import VIEWS, write  # noqa: E402
from ..servers import use_endpoint  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = ["--max-video-frames", "30", "--overlap", "6", "--shard-size", "1MB", "--gop", "8", "--mix-videos", "2"]
CONFIG = dict(max_video_frames=30, overlap=6, shard_bytes=10**6, mix_videos=2)


def noisy_source(root: str, size: tuple[int, int], videos: int = 4, frames: int = 90) -> str:
    """The barcode source with film grain: the clips take real bytes (barcodes survive it)."""
    synth_source(root, videos=videos, frames=frames, views=VIEWS, size=size, seed=3)
    for vid in sorted(os.listdir(os.path.join(root, "videos"))):
        for name in os.listdir(os.path.join(root, "videos", vid)):
            path = os.path.join(root, "videos", vid, name)
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", path, "-vf", "noise=alls=24:allf=t", "-c:v", "libx264",
                            "-g", "12", "-threads", "1", path + ".mp4"], check=True)
            os.replace(path + ".mp4", path)
    return root


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster-src")
    return {"small": noisy_source(str(base / "small"), (96, 72)), "large": noisy_source(str(base / "large"), (160, 120))}


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    """Two nodes of one CPU each, so concurrent tasks land on both; each node has its own TMPDIR
    (where tasks keep their temporary clips), started without PYTHONPATH: the workers get the
    code from the job's runtime_env only."""
    from ray.cluster_utils import Cluster

    use_endpoint(s3_server)
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "TMPDIR", "RAY_TMPDIR", "RAY_AUTH_MODE")}
    os.environ.pop("PYTHONPATH", None)
    # The drivers run with an empty HOME (no ~/.ray/auth_token): a token-auth mode leaking in
    # from the environment (seen once under pytest-xdist) must not reach the cluster or them.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Short: Ray's AF_UNIX socket paths under it must stay under 108 bytes (pytest-xdist's
    # basetemp adds a popen-gwN level).
    ray_tmp = tempfile.mkdtemp(prefix="vsray-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = ray_tmp
    tmpdirs = [str(tmp_path_factory.mktemp(f"node{i}-tmp")) for i in range(2)]
    os.environ["TMPDIR"] = tmpdirs[0]
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"node0": 1}, "include_dashboard": False})
    os.environ["TMPDIR"] = tmpdirs[1]
    c.add_node(num_cpus=1, resources={"node1": 1})
    c.wait_for_nodes()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    c.tmpdirs = tmpdirs
    yield c
    c.shutdown()
    shutil.rmtree(ray_tmp, ignore_errors=True)


def driver(source: str, url: str, address: str, tmp_path, name: str, wait: bool = True, args: tuple[str, ...] = ()):
    """`vidshard write` in an empty folder with an empty HOME, the code imported by path, no PYTHONPATH."""
    home, cwd = tmp_path / f"{name}-home", tmp_path / f"{name}-cwd"
    home.mkdir(exist_ok=True)
    cwd.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HOME": str(home), "RAY_AUTH_MODE": "disabled"}
    code = f"import sys; sys.path.insert(0, {ROOT!r}); from vidshard.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, "write", source, url, *ARGS, *args, "--engine", "ray", "--ray-address", address]
    if not wait:
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True), home, cwd
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, home, cwd


def s3_digests(prefix: str) -> dict[str, str]:
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    return {os.path.basename(p): hashlib.sha256(fs.cat_file(p)).hexdigest() for p in sorted(fs.ls(f"vidshard/{prefix}"))}


def local_digests(out: str) -> dict[str, str]:
    return {n: hashlib.sha256(open(os.path.join(out, n), "rb").read()).hexdigest() for n in sorted(os.listdir(out))}


def driver_io(stdout: str) -> dict[str, int]:
    m = re.search(r"\((\d+) bytes\) under .*\ndriver I/O during the job: (\d+) bytes .*; peak RSS (\d+) bytes", stdout)
    assert m, stdout
    dataset, io, rss = map(int, m.groups())
    return {"dataset": dataset, "io": io, "rss": rss}


def test_two_nodes_on_s3_driver_only_plans(cluster, sources, tmp_path):
    began = time.time()
    reports = {}
    for name, src in sources.items():
        local = str(tmp_path / f"local-{name}")
        write(src, local, workers=2, **CONFIG)
        stdout, home, cwd = driver(src, f"s3://vidshard/{name}", cluster.address, tmp_path, name)
        assert s3_digests(name) == local_digests(local)  # the local engine's bytes, every object
        assert not os.listdir(home) and not os.listdir(cwd)  # the driver wrote nothing of its own
        reports[name] = driver_io(stdout)
    for tmpdir in cluster.tmpdirs:  # both nodes encoded (their TMPDIR changed) and cleaned up after
        assert os.stat(tmpdir).st_mtime > began and not os.listdir(tmpdir)
    for r in reports.values():
        assert r["io"] < 0.05 * r["dataset"], reports  # the driver's I/O is metadata
    small, large = reports["small"], reports["large"]
    assert large["dataset"] > 2 * small["dataset"], reports
    assert large["rss"] - small["rss"] < 0.25 * (large["dataset"] - small["dataset"]), reports  # not the dataset's bytes
    print(reports)
    ds = VideoShardDataset("s3://vidshard/small", load_rgb=True, load_kpt=False)
    frames = 0
    for item in ds:  # streams back from the object store, every frame the one it claims
        video, indices = item["video"], item["frame_index"].tolist()
        assert indices == list(range(item["meta"]["start_frame"], item["meta"]["end_frame"]))
        for v, view in enumerate(item["meta"]["views"]):
            assert [read_barcode(video[v, t].numpy()) for t in range(len(indices))] == [(f, v) for f in indices]
            frames += len(indices)
    assert frames == 4 * 3 * (30 + 30 + 30 + 18)
    assert main(["verify", "s3://vidshard/small"]) == 0  # offsets, sizes, hashes, from the object store


def test_driver_killed_mid_run_resumes_to_the_same_bytes(cluster, sources, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem()
    local = str(tmp_path / "local")
    write(sources["small"], local, workers=2, **CONFIG)
    proc, _, _ = driver(sources["small"], "s3://vidshard/killed", cluster.address, tmp_path, "first", wait=False)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        fs.invalidate_cache()
        if fs.exists("vidshard/killed/shard-000000.tar"):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the job ended before a shard was published: no mid-run kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    fs.invalidate_cache()
    assert not fs.exists("vidshard/killed/index.json")
    driver(sources["small"], "s3://vidshard/killed", cluster.address, tmp_path, "again")
    assert s3_digests("killed") == local_digests(local)
    shutil.rmtree(local)


def test_one_long_video_is_encoded_on_both_nodes(cluster, tmp_path, monkeypatch):
    """One 3-view video cut into runs of chunks: both nodes encode runs of it (each encode
    task records the Ray node it ran on), and the bytes are the local engine's, written whole."""
    from shardwriter.encode import EncodeSettings
    from shardwriter.job import WriteConfig, write_dataset
    from shardwriter.ray_engine import RayEngine, job_runtime_env

    from .ray_helpers import WrappedEngine

    src = noisy_source(str(tmp_path / "long"), (96, 72), videos=1, frames=240)
    local = str(tmp_path / "local")
    write(src, local, workers=1, **CONFIG)  # one task for the whole video
    seen = tmp_path / "nodes"
    seen.mkdir()

    def traced(fn, task, seen=str(seen)):  # defined here: sent by value, the tests are not shipped
        import ray as worker_ray

        if hasattr(task, "first"):  # an encode task (a run)
            open(os.path.join(seen, f"{worker_ray.get_runtime_context().get_node_id()}-{task.first}"), "w").close()
        return fn(task)

    monkeypatch.chdir(tmp_path)
    ray.init(address=cluster.address, runtime_env=job_runtime_env(), include_dashboard=False, log_to_driver=False)
    try:
        write_dataset(src, "s3://vidshard/long", WriteConfig(**CONFIG, encode=EncodeSettings(gop=8)),
                      engine=lambda w: WrappedEngine(RayEngine(), traced), run_frames=30)  # the settings of write()
    finally:
        ray.shutdown()
    runs = sorted(os.listdir(seen))
    assert len(runs) == 8  # 240 frames, chunks of 30 (overlap 6) in runs of about 30 frames
    assert len({name.rpartition("-")[0] for name in runs}) == 2, runs  # both nodes
    assert s3_digests("long") == local_digests(local)


def test_workers_import_the_shipped_code(cluster, tmp_path, monkeypatch):
    """No PYTHONPATH on the nodes and none from the driver: the workers' `shardwriter` is the
    copy Ray unpacked from the job's runtime_env, not a checkout or an installed copy. (Ray
    also puts the driver's working folder on the workers' path: an empty one here, as for
    the CLI driver above.)"""
    from shardwriter.ray_engine import job_runtime_env

    def where() -> dict:  # defined here: sent by value, the tests are not shipped
        import shardwriter
        import streaming

        return {"shardwriter": shardwriter.__file__, "streaming": streaming.__file__,
                "pythonpath": os.environ.get("PYTHONPATH")}

    monkeypatch.chdir(tmp_path)
    ray.init(address=cluster.address, runtime_env=job_runtime_env(), include_dashboard=False, log_to_driver=False)
    try:
        found = ray.get(ray.remote(where).remote())
    finally:
        ray.shutdown()
    assert found["pythonpath"] is None or ROOT not in found["pythonpath"]
    for name in ("shardwriter", "streaming"):
        assert "runtime_resources" in found[name] and not found[name].startswith(ROOT), found
