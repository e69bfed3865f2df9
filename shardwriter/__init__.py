"""vidshard's writer library: a source dataset -> chunk samples in tar shards + index.json.

    config.py    the job's settings (WriteConfig), checked when made
    source.py    the SOURCE layout read into validated VideoSpecs (probing each view)
    display.py   how a view is meant to be shown: display matrix and colour (pure)
    stray.py     file names in source folders that are never data (.DS_Store, backups)
    plan.py      pure planning: chunk ranges, timeline clipping, sample order, shard packing
    encode.py    frame-exact clip encoding (PyAV / libx264)
    keypoints.py per-frame keypoint files -> one stacked npz per chunk and view
    task.py      the per-video task: one video -> its spooled samples
    assemble.py  spooled samples -> tar shards
    store.py     where finished files go: a local folder or an object store
    job.py       the write job: sequences the above and owns OUTPUT's life cycle
    ray_engine.py the per-video tasks on Ray

The sample format is `streaming.format`, shared with the reader; nothing else of the reader
is imported here.
"""
