"""Files: atomic writes and the mmkgc cache home, shared by every module that writes to disk."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

#: Environment variable overriding the cache root.
ENV_HOME = "MMKGC_HOME"


def cache_home() -> Path:
    """Root of mmkgc's caches (datasets, feature tables, compiled kernels): ``$MMKGC_HOME`` when set, else
    ``platformdirs.user_cache_dir("mmkgc")`` (``~/.cache/mmkgc`` on Linux)."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mmkgc"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically.

    ``write(tmp)`` must write the complete file to ``tmp``, a fresh path in the same directory; it is then
    moved over ``path`` with :func:`os.replace` (atomic on POSIX and Windows).  On any error the temporary
    file is removed and ``path`` is left as it was.  Parent directories are created.  The file gets the
    permissions a plain ``open(path, "w")`` would give it (``0666`` less the umask), or keeps those of the file
    it replaces.

    :returns: ``Path(path)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp creates the file readable by its owner only; give it the mode a plain open() would have
        # (0666 less the umask), or the permissions of the file it replaces
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Atomically write a text file (``\\n`` line endings, flushed and fsynced before the rename)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding=encoding, newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    return atomic_write(path, write)


def write_new_directory(directory: str | Path, write: Callable[[Path], None], what: str = "the output") -> Path:
    """Create ``directory`` atomically: ``write(tmp)`` fills a fresh sibling directory, which is then renamed to
    ``directory``; on any error it is removed, so ``directory`` is either absent (or left empty) or complete.
    The mkdtemp directory (mode ``0700``) gets the mode a plain ``mkdir`` would give (``0777`` less the umask).

    :param what: how messages name the directory (``--output``, ...).
    :raises ConfigError: ``directory`` exists and is a file or a non-empty directory (nothing is overwritten).
    :returns: ``Path(directory)``.
    """
    import shutil

    from mmkgc.errors import ConfigError

    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ConfigError(f"{what} {directory}: exists and is not an empty directory (nothing was overwritten)")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        write(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        if directory.exists():
            directory.rmdir()  # empty (checked above)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory
