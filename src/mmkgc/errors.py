"""Error types.  Every error a user can cause by bad input is an :class:`MMKGCError` whose message names
the file and line (or config field) and what is wrong; the CLI prints it without a traceback."""

from __future__ import annotations

from pathlib import Path


class MMKGCError(Exception):
    """Base class for user-facing errors (bad files, bad configs, unknown names)."""


class DataFormatError(MMKGCError, ValueError):
    """A data file is malformed.

    :param path: the offending file.
    :param line: 1-based line number, or ``None`` when the problem concerns the whole file.
    :param message: what is wrong.
    """

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {message}")


class ConfigError(MMKGCError, ValueError):
    """A configuration value is invalid; the message names the field."""


class CheckpointError(MMKGCError):
    """A checkpoint is missing, corrupt or does not match the model it is loaded into."""


class UnknownNameError(MMKGCError, KeyError):
    """An unknown dataset, encoder, scorer or other registered name was requested."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or SIGTERM.  The unfinished epoch is discarded; ``checkpoint`` (the last complete
    epoch, ``None`` when no epoch finished) is kept.  The CLI prints the message and how to resume, exit 130.

    :param epoch: epochs completed and saved in ``checkpoint``.
    """

    def __init__(self, message: str, checkpoint=None, epoch: int = 0):
        super().__init__(message)
        self.checkpoint = checkpoint
        self.epoch = epoch

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "interrupted"
