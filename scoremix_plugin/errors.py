"""The project's error types: one base class for every mistake a user can make.

``scoremix_plugin.cli.main`` prints an error of these types as ``scoremix CMD: error: MESSAGE`` and
exits 2; anything else reaching it is a bug (traceback, exit 1). So a message must name what the
user has to fix: the file, the key, the byte offset, the flag or the config key.

Each type also derives from the built-in exception it refines (``ValueError``, ``FileNotFoundError``,
...), so library callers that catch those keep working.
"""

from __future__ import annotations


class ScoreMixError(Exception):
    """Bad input from the user (a file, a flag, a config value): the message says which and why."""


class InputError(ScoreMixError, ValueError):
    """A flag or argument value is wrong, or an input file's content is unusable."""


class MissingInputError(ScoreMixError, FileNotFoundError):
    """An input file or folder the user named does not exist."""


class CheckpointError(ScoreMixError, ValueError):
    """A checkpoint file cannot be used: not loadable, not the expected kind, or holding bad values."""


class OutputExistsError(ScoreMixError, FileExistsError):
    """The output already holds data the command would replace (``--overwrite`` / ``--resume`` say otherwise),
    or the output is one of the command's own inputs."""


class OutputLockedError(ScoreMixError):
    """Another process is writing the same output folder."""


class OutputWriteError(ScoreMixError, OSError):
    """Writing an output failed (a full disk, a vanished folder); the previous file under that name is kept."""
