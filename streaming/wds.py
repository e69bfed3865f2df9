"""vidshard items inside webdataset and wids pipelines.

    stage = wds_items(sample="segment", num_frames=16, img_size=(112, 112))
    wds.WebDataset(urls, shardshuffle=100).shuffle(1000).compose(stage)     # streaming
    [stage.of(s) for s in wids.ShardListDataset("out/index.json", transformations=[])]   # map-style

`WdsItems` turns the raw samples webdataset or wids read from vidshard shards (a dict of
member bytes per key) into exactly the items `VideoShardDataset` builds for those samples:
the same checks (`items.parse_sample` against index.json, every clip against its meta.json),
the same `build_item`, the same clip windows (seeded by (seed, epoch, shard, sample)) and
the same typed errors, with `on_error="raise"` or `"skip"` (logged and counted in `stats`;
a webdataset pipeline has no exact epochs, so nothing replaces a skipped item).

The tar layer is theirs: webdataset and wids split members by name and hand over their
bytes; here each member is held to index.json's limits before anything is parsed (JSON
members to max_json_bytes, kpt.npz to what the schema implies, clips to max_member_bytes),
and members of views not asked for are never looked at. index.json is the one beside each
shard (`source=` names it where the shards' URLs cannot: wids samples, `pipe:` URLs) and is
read once per folder. Nothing here imports webdataset or wids.
"""

from __future__ import annotations

import collections
import io
import logging
import multiprocessing
import posixpath
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .decode import ClipDecoder
from .errors import DatasetRefused, SampleError, ShardFormatError
from .items import build_item, parse_sample
from .options import ReadOptions, Source, clip_rng, member_limit, open_source, wanted_members
from .pool import for_the_queue
from .remote import StorageOptions, redact
from .tario import Limits, kind_limit
from .world import World

log = logging.getLogger("vidshard.streaming")


class WdsItems:
    """A pipeline stage: raw samples in, items out (several per sample in segment mode)."""

    def __init__(self, *, source: str | None = None, sample: str = "chunk", num_frames: int | None = None, stride: int = 1,
                 img_size: tuple[int, int] | None = None, views: Sequence[str] | None = None, load_rgb: bool = True,
                 load_kpt: bool = False, seed: int = 0, on_error: str = "raise", decode_threads: int = 1,
                 limits: Limits = Limits(), storage: StorageOptions | None = None):
        if on_error not in ("raise", "skip"):
            raise DatasetRefused(f'on_error must be "raise" or "skip", got {on_error!r}')
        self.settings = ReadOptions(sample=sample, num_frames=num_frames, stride=stride, img_size=img_size, views=views,
                                    load_rgb=load_rgb, load_kpt=load_kpt, limits=limits, storage=storage)
        self.source, self.seed, self.on_error, self.decode_threads = source, seed, on_error, decode_threads
        self._epoch = multiprocessing.RawValue("q", 0)  # inherited by DataLoader workers, as VideoShardDataset's
        self.stats: collections.Counter = collections.Counter()
        self._folders: dict[str, _Folder] = {}
        self._decoder: ClipDecoder | None = None
        if source is not None:
            self._folder(source)  # index.json and the options checked now, not in the first worker

    def set_epoch(self, epoch: int) -> None:
        """The epoch clip-mode windows are drawn for (as VideoShardDataset.set_epoch)."""
        self._epoch.value = epoch

    def __call__(self, samples: Iterable[dict]) -> Iterator[dict[str, Any]]:
        for raw in samples:
            try:
                items = self.of(raw)
            except SampleError as exc:
                if self.on_error == "raise":
                    raise
                self.stats[f"skipped_{exc.reason}"] += 1
                log.warning("skipping %s item(s) (%s): %s", exc.key or "the", exc.reason, exc)
                continue
            yield from items

    def of(self, raw: dict) -> list[dict[str, Any]]:
        """The items of one raw sample (webdataset's or wids'); its typed SampleError."""
        key = raw.get("__key__")
        url = raw.get("__url__")
        if self.source is None and (not isinstance(url, str) or url.startswith("pipe:") or "/" not in url.strip("/")):
            raise DatasetRefused(f"a sample from {redact(str(url))[:100]!r}: no folder to find index.json in; pass wds_items(source=...)")
        folder = self._folder(self.source if self.source is not None else posixpath.dirname(url))
        found = folder.where.get(key) if isinstance(key, str) else None
        shown = redact(str(raw.get("__url__") or raw.get("__shard__") or folder.name))
        if found is None:
            raise ShardFormatError(f"sample {str(key)[:80]!r} is not listed in {folder.name}/index.json", shard=shown, key=key)
        shard, index = found
        src, url = folder.src, redact(folder.src.urls[shard])
        entry = src.manifest.shards[shard].samples[index]
        named, listed = raw.get("__url__") or raw.get("__shard__"), posixpath.basename(src.manifest.shards[shard].url)
        if named is not None and not _names(str(named), listed):
            raise ShardFormatError(f"sample read from {shown}, index.json lists it in {src.manifest.shards[shard].url}",
                                   shard=shown, key=key)
        sample = _members(raw, key, src, entry, url)
        info = parse_sample(sample, entry.nframes, entry.nsegments, src.options,
                            clip_rng(self.seed, self._epoch.value, key), url, entry.segments)
        if self._decoder is None:
            self._decoder = ClipDecoder(threads=self.decode_threads, stats=self.stats, shared=World.detect().in_worker)
        items = []
        for spec in info.specs:
            item = build_item(sample, info, spec, src.options, self._decoder, url)
            item["meta"]["padded"] = False  # VideoShardDataset's field: never a repeat here
            items.append(for_the_queue(item))  # (this stage has no transform: later stages see ValueTensors, tensors)
        self.stats["items"] += len(items)
        return items

    def _folder(self, source: str) -> _Folder:
        folder = self._folders.get(source)
        if folder is None:
            src = open_source(source, self.settings)
            where = {e.key: (s, i) for s, shard in enumerate(src.manifest.shards) for i, e in enumerate(shard.samples)}
            folder = self._folders[source] = _Folder(name=redact(source or "."), src=src, where=where)
        return folder

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers under spawn: index.json is read again there
        state = dict(self.__dict__, _folders={}, _decoder=None)
        if multiprocessing.context.get_spawning_popen() is None:
            state["_epoch"] = self._epoch.value  # pickle.dumps, deepcopy: the shared value cannot travel, its value can
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["_epoch"], int):
            state["_epoch"] = multiprocessing.RawValue("q", state["_epoch"])
        self.__dict__.update(state)


def wds_items(**options) -> WdsItems:
    """`WdsItems(**options)`: the stage for `wds.WebDataset(...).compose(...)` (see the module doc)."""
    return WdsItems(**options)


class _Folder:
    def __init__(self, *, name: str, src: Source, where: dict[str, tuple[int, int]]):
        self.name, self.src, self.where = name, src, where


def _names(url: str, shard: str) -> bool:
    """Whether a sample's URL names this shard file: its last path segment, or for a `pipe:`
    command (`pipe:aws s3 cp s3://b/shard-000003.tar -`) one of its words' last segment."""
    words = url[len("pipe:"):].split() if url.startswith("pipe:") else [url]
    return any(posixpath.basename(word) == shard for word in words)


def _members(raw: dict, key: str, src: Source, entry, url: str) -> dict:
    """The members items read, as bytes under vidshard's suffixes ("front.mp4"), each held to
    its byte limit; wids names them ".front.mp4" and hands over file objects."""
    sample: dict[str, Any] = {"__key__": key}
    limits = src.options.limits
    for suffix in sorted(wanted_members(src.options)):
        data = raw.get(suffix, raw.get("." + suffix))
        if data is None:
            continue  # a missing member is the builder's error, as in VideoShardDataset
        if isinstance(data, io.IOBase):
            data = data.read()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ShardFormatError(f"member {suffix} is a {type(data).__name__}, not bytes: decode nothing before this "
                                   "stage (WebDataset without .decode(), wids with transformations=[])", shard=url, key=key,
                                   member=f"{key}.{suffix}")
        limit = member_limit(src, entry, suffix)
        if limit is None:
            limit = kind_limit(suffix, limits)
        if len(data) > limit:
            raise ShardFormatError(f"member holds {len(data)} bytes, over the limit of {limit}", shard=url, key=key,
                                   member=f"{key}.{suffix}")
        sample[suffix] = bytes(data)
    return sample
