"""The application's typed errors: what a command was asked that cannot be done as asked.

`vidshard` (cli.py) says these in one line and exits 2, as it does the libraries' typed
errors (shardwriter.errors.WriterError, streaming.errors.ReaderError: a bad sample or shard, a
dataset refused, a storage that cannot serve it, a resume state refused); anything else is a
bug and shows with its traceback.
"""

from __future__ import annotations


class CommandError(Exception):
    """A setting, argument or name the command cannot use."""


class SettingError(CommandError, ValueError):
    """A setting refused (also a ValueError, as the checks raised before)."""


class NoSuchSample(CommandError, KeyError):
    """A sample key the dataset does not list (also a KeyError, as before)."""

    def __str__(self) -> str:  # the message, not KeyError's repr of it
        return str(self.args[0]) if self.args else ""
