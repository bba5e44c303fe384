"""Reading a file named by input: a regular file, under the folder it was given, size-capped.

Every file herald reads because someone named it (a directory file, a credential file or a folder
of them) goes through :func:`read_regular`: ``/dev/zero``, a FIFO or a 1 GB file would otherwise
hang a command or a sweep, and a symlink inside a scanned folder could make herald read (and
report on) a file the folder's owner could not, such as ``/etc/shadow``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from herald.errors import HeraldError

__all__ = ["InputFileError", "private_file", "read_regular", "under"]


class InputFileError(HeraldError, ValueError):
    """A file named by input that herald refuses to read; the reason never quotes its content."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def under(path: Path | str, root: Path | str) -> bool:
    """True when ``path``, every symlink resolved, is ``root`` or inside it (``root`` resolved too)."""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _size(count: int) -> str:
    return f"{count / 1_048_576:g} MB" if count >= 1_048_576 else f"{count:,} bytes"


def read_regular(path: Path | str, *, max_bytes: int, root: Path | str | None = None) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; with ``root``, only a file under it.

    Symlinks are resolved first and the real path must stay under ``root``; the real path is then
    opened with O_NOFOLLOW (a symlink swapped in meanwhile fails) and O_NONBLOCK (a FIFO never
    blocks), and the open descriptor must be a regular file: the checks hold for what is read.
    """
    shown = str(path)
    if root is not None and not under(path, root):
        raise InputFileError(shown, f"resolves outside {root} (a symlink?): not read")
    real = os.path.realpath(path)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        raise InputFileError(shown, f"cannot read: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputFileError(shown, "not a regular file: not read")
        if info.st_size > max_bytes:
            raise InputFileError(shown, f"is {_size(info.st_size)}, larger than the limit of {_size(max_bytes)}")
        chunks: list[bytes] = []
        left = max_bytes + 1  # one byte more tells a file that grew past the limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise InputFileError(shown, f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise InputFileError(shown, f"is larger than the limit of {_size(max_bytes)}")
    return data


def private_file(path: Path | str) -> None:
    """Create ``path`` readable by its owner only (0600; its folder 0700 if herald creates it).

    For the embedded SQLite files (state and broker): they hold Web Push subscriptions' auth
    secrets and every queued event. SQLite gives its -wal and -shm files the mode of the database
    file, so those follow. An existing file is tightened too (one created before this check).
    """
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    except PermissionError:  # not ours: leave it to its owner
        pass
    finally:
        os.close(fd)
