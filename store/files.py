"""Small file-system helpers shared by everything that must survive a crash at any instant."""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Flush a directory's entries (a rename or a new link) to disk."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: Path) -> None:
    """Flush everything written to the filesystem holding ``path``: data, new files, renames.

    One ``syncfs(2)`` makes a whole batch of files durable for the price of about one ``fsync``,
    where an ``fsync`` per file costs a journal commit each. Where ``syncfs`` is missing (not Linux),
    ``sync(2)`` flushes every filesystem, which is slower but as safe.
    """
    syncfs = _libc_syncfs()
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), str(path))
    finally:
        os.close(fd)


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library, for the calls Python's ``os`` lacks; errno is kept for ``ctypes.get_errno()``.

    The interpreter's own symbols, which include the C library it is linked with (no search for the
    library file, which would run ``ldconfig``). A missing function raises AttributeError.
    """
    return ctypes.CDLL(None, use_errno=True)


@functools.cache
def _libc_syncfs() -> Callable[[int], int] | None:
    try:
        function: Callable[[int], int] = libc().syncfs
    except (OSError, AttributeError):
        return None
    return function
