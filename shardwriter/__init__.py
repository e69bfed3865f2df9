"""vidshard's writer library: a source dataset -> chunk samples in tar shards + index.json.

    config.py    the job's settings (WriteConfig), checked when made
    source.py    the SOURCE layout read into validated VideoSpecs (probing each view)
    media.py     one view file as a player sees it: the stream played, its rate, how it is stored,
                 where it can be entered mid-file (keyframes and their frame index)
    limits.py    the reader's limits and key format applied to a probed video, before writing
    check.py     `vidshard check`: every problem and warning of a SOURCE at once
    fingerprint.py  the SOURCE listing an OUTPUT was written from, recorded and compared
    lock.py      one writer per OUTPUT (.vidshard-lock: host, pid, start time)
    display.py   how a view is meant to be shown: display matrix and colour (pure)
    stray.py     file names in source folders that are never data (.DS_Store, backups)
    plan.py      pure planning: chunk ranges, runs of chunks, timeline clipping, sample order, shard packing
    encode.py    frame-exact clip encoding (PyAV / libx264)
    keypoints.py per-frame keypoint files -> one stacked npz per chunk and view
    probe.py     the probe task: one video -> its spec, keypoint schema, fingerprint
    task.py      the encode task: a run of consecutive chunks of one video -> its samples, spooled
    spool.py     a spooled sample = its exact tar records; copying them into a shard, checked
    assemble.py  the shard task: spooled samples -> one published shard and its entry
    schedule.py  the driver's plan (saved, checked on resume) and its streaming schedule
    store.py     where files live: a local folder or an object store, atomic writes
    engine.py    where tasks run: one interface; the local process pool
    ray_engine.py the same interface on Ray, the code shipped with the job
    job.py       the write job's driver: lists, plans, schedules, owns OUTPUT's life cycle

The sample format is `streaming.format`, shared with the reader; nothing else of the reader
is imported here.
"""
