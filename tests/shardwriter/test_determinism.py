"""Encoded bytes do not depend on heap garbage: several encoders in one process (three views,
overlapping chunks, three videos one after another) give the same bytes whatever the heap
held, and the writer leaves the environment alone.

The writer used to pin glibc's MALLOC_PERTURB_ in its workers because libx264's output was
once seen to vary between runs. Here the heap is filled with garbage on purpose: glibc's
MALLOC_PERTURB_ at several values with every allocation forced onto the heap (no fresh,
zeroed mmap), and, where a C compiler exists, an LD_PRELOAD allocator that fills every
block with seeded random bytes, or with one byte. Any read of uninitialised memory that
reached the bytes would make the runs differ.

One did: libx264's AVX-512 mbtree_propagate_list reads past the end of a row of macroblocks
when the width in macroblocks is not a multiple of 8 (these clips are 4 wide), so the bytes
depended on the heap in ~1-3% of clips (see EncodeSettings.codec_options). Random garbage
seldom shows it (a random motion vector seldom points back into the frame); blocks of 0xff
do, every time we ran it (vectors of -1 point at the row's own macroblocks, costs of 0xffff
have both lists' bits set), blocks of 0x00 do not: without the fix the two one-byte fills
give different bytes on a machine with AVX-512; elsewhere the test cannot fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from ..helpers import write

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = r"""
import hashlib, os, sys
from shardwriter.encode import EncodeSettings
from shardwriter.probe import ProbeTask, run_probe_task
from shardwriter.plan import chunk_plan
from shardwriter.task import RunTask, run_encode_task
src, work = sys.argv[1], sys.argv[2]
digest = hashlib.sha256()
for vid in ("session_000", "session_001", "session_002"):
    probe = run_probe_task(ProbeTask(source=src, video_id=vid, views=("front", "left", "right"), truncate_views=False,
                                     encode=EncodeSettings(gop=8)))
    run_encode_task(RunTask(spec=probe.spec, max_video_frames=30, overlap=6, encode=EncodeSettings(gop=8),
                            keypoint_schema=probe.schema, keypoint_origin=probe.origin, work=work,
                            first=0, stop=len(chunk_plan(probe.spec.num_frames, 30, 6))))
for name in sorted(os.listdir(os.path.join(work, "spool"))):
    digest.update(name.encode() + open(os.path.join(work, "spool", name), "rb").read())
print(digest.hexdigest())
"""

GARBAGE_MALLOC = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
static void *(*r_malloc)(size_t); static void *(*r_realloc)(void *, size_t);
static int (*r_posix_memalign)(void **, size_t, size_t); static void *(*r_memalign)(size_t, size_t);
static void *(*r_aligned_alloc)(size_t, size_t); static uint64_t state; static int byte = -1;
static void init(void) {
    r_malloc = dlsym(RTLD_NEXT, "malloc"); r_realloc = dlsym(RTLD_NEXT, "realloc");
    r_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign"); r_memalign = dlsym(RTLD_NEXT, "memalign");
    r_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    const char *s = getenv("GARBAGE_SEED"); state = (s ? strtoull(s, 0, 10) : 1) * 0x9E3779B97F4A7C15ULL + 1;
    const char *b = getenv("GARBAGE_BYTE"); if (b) byte = atoi(b);
}
static void fill(unsigned char *p, size_t n) {
    uint64_t x = state; size_t i = 0;
    if (!p) return;
    if (byte >= 0) { memset(p, byte, n); return; }
    for (; i + 8 <= n; i += 8) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; memcpy(p + i, &x, 8); }
    for (; i < n; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; p[i] = (unsigned char)x; }
    state = x;
}
void *malloc(size_t n) { if (!r_malloc) init(); void *p = r_malloc(n); fill(p, n); return p; }
void *realloc(void *o, size_t n) {
    if (!r_realloc) init(); size_t k = o ? malloc_usable_size(o) : 0; void *p = r_realloc(o, n);
    if (p && n > k) fill((unsigned char *)p + k, n - k); return p;
}
int posix_memalign(void **out, size_t a, size_t n) { if (!r_posix_memalign) init(); int rc = r_posix_memalign(out, a, n); if (!rc) fill(*out, n); return rc; }
void *memalign(size_t a, size_t n) { if (!r_memalign) init(); void *p = r_memalign(a, n); fill(p, n); return p; }
void *aligned_alloc(size_t a, size_t n) { if (!r_aligned_alloc) init(); void *p = r_aligned_alloc(a, n); fill(p, n); return p; }
"""


def encode_in_child(src: str, work: str, env: dict) -> str:
    shutil.rmtree(work, ignore_errors=True)
    env = {**{k: v for k, v in os.environ.items() if k not in ("MALLOC_PERTURB_", "LD_PRELOAD")}, "PYTHONPATH": ROOT, **env}
    out = subprocess.run([sys.executable, "-c", CHILD, src, work], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


@pytest.fixture(scope="module")
def garbage_shim(tmp_path_factory) -> str | None:
    """The LD_PRELOAD allocator above, built; None without a C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        return None
    folder = tmp_path_factory.mktemp("shim")
    (folder / "garbage.c").write_text(GARBAGE_MALLOC)
    shim = str(folder / "garbage.so")
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", shim, str(folder / "garbage.c"), "-ldl"], check=True)
    return shim


def test_heap_garbage_does_not_reach_the_bytes(small_source, tmp_path, garbage_shim):
    work = str(tmp_path / "work")
    heap_only = "glibc.malloc.mmap_threshold=33554432"  # every block from the heap, where perturbing applies
    runs = {encode_in_child(small_source, work, {"MALLOC_PERTURB_": str(p), "GLIBC_TUNABLES": heap_only})
            for p in (0, 1, 85, 165, 254)}
    if garbage_shim:
        runs |= {encode_in_child(small_source, work, {"LD_PRELOAD": garbage_shim, "GARBAGE_SEED": str(s)}) for s in (1, 2, 3)}
    assert len(runs) == 1, runs


def test_heap_of_zeros_and_heap_of_ones_give_the_same_bytes(small_source, tmp_path, garbage_shim):
    if not garbage_shim:
        pytest.skip("no C compiler for the LD_PRELOAD allocator")
    work = str(tmp_path / "work")
    runs = {b: encode_in_child(small_source, work, {"LD_PRELOAD": garbage_shim, "GARBAGE_BYTE": str(b)}) for b in (0x00, 0xFF)}
    assert runs[0x00] == runs[0xFF]


def test_writer_leaves_the_environment_alone(small_source, tmp_path):
    before = dict(os.environ)
    write(small_source, str(tmp_path / "out"), overlap=6, workers=2)
    assert dict(os.environ) == before


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_counts_give_the_same_bytes_without_a_pinned_heap(small_source, small_dataset, tmp_path, workers):
    from .test_writer_resume import digests

    assert "MALLOC_PERTURB_" not in os.environ
    out = str(tmp_path / "out")
    write(small_source, out, overlap=6, workers=workers)
    assert digests(out) == digests(small_dataset)


def test_library_defaults_and_cli_defaults_write_the_same_bytes(small_source, tmp_path):
    """Every write default lives once, in the library (WriteConfig, EncodeSettings); the CLI
    reads it: `--shard-size` was "1GB" (10^9) on the command line and 1 GiB in WriteConfig."""
    from shardwriter.job import WriteConfig, write_dataset
    from vidshard.cli import main

    from .test_writer_resume import digests

    lib, cli = str(tmp_path / "lib"), str(tmp_path / "cli")
    write_dataset(small_source, lib, WriteConfig(max_video_frames=30))
    assert main(["-q", "write", small_source, cli, "--max-video-frames", "30"]) == 0
    assert digests(lib) == digests(cli)
    index = json.load(open(os.path.join(cli, "index.json")))
    assert index["config"]["shard_bytes"] == WriteConfig.shard_bytes and index["config"]["on_error"] == "raise"
