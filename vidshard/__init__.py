"""The application layer: the `vidshard` command and everything that is a tool or an example.

    vidshard/cli.py      the command line (`vidshard ...`, `python -m vidshard ...`)
    vidshard/synth.py    a synthetic source whose pixels say which frame and view they are
    vidshard/demo.py     synthetic source -> shards -> a streamed epoch -> training steps
    vidshard/tools/      inspect / ls / show / verify: looking at shards
    vidshard/bench/      `vidshard bench`: every figure beside its baseline, measured in one run
    vidshard/train/      the chunked-loading training example (config, model, trainer)

It imports the two libraries below it, `streaming` (the reader) and `shardwriter` (the
writer); neither of them imports anything from here.
"""
