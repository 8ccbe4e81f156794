"""Atomic file writes: a reader sees the old file or the complete new one, never a half; and a
write the file system refuses is one line that says why."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

from mlebench.errors import OutputError

_REASONS = {
    errno.ENOSPC: "the disk is full (no space left on device)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "the operation is not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a directory",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ENOENT: "a folder on the way does not exist and cannot be created",
    errno.EEXIST: "something is in the way",
}


def describe_os_error(exc: OSError, path: Path | None = None) -> str:
    """``exc`` in words: what went wrong (the disk is full, read-only, ...) and, when it concerns
    another path than ``path``, which."""
    reason = _REASONS.get(exc.errno or 0, exc.strerror or str(exc))
    where = exc.filename
    if where is not None and (path is None or Path(where) != Path(path)):
        reason += f" ({where})"
    return reason


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; sync it and rename it onto ``target`` on success.

    On an exception the temporary file is removed and ``target`` is left untouched. A
    file-system error (a full disk, a read-only folder, a parent that is a file, ...) while
    making, writing or renaming the file becomes :class:`OutputError` naming ``target`` and the
    cause (:func:`describe_os_error`).
    """
    target = Path(target)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # A short prefix: the temporary name must fit wherever the target's name does.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name[:64]}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        yield tmp
        with open(tmp, "rb+") as fh:  # on the disk before it replaces anything (a full disk shows here)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {describe_os_error(exc, target)}") from exc
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def write_bytes_atomically(target: str | Path, data: bytes) -> Path:
    """``data`` into ``target``, atomically (see :func:`atomic_path`)."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


_MAGIC = (
    (b"SQLite format 3\x00", "sqlite", "an SQLite database (a results store)"),
    (b"\x89PNG\r\n\x1a\n", "png", "a PNG image"),
    (b"\xff\xd8\xff", "jpeg", "a JPEG image"),
    (b"\x93NUMPY", "numpy", "a NumPy array"),
    (b"%PDF", "pdf", "a PDF document"),
    (b"PK\x03\x04", "zip", "a zip archive"),
    (b"\x80", "pickle", "a Python pickle"),
)


def sniff(path: str | Path) -> tuple[str, str]:
    """(kind, description) of a file from its first bytes: ``sqlite``, ``png``, ``jpeg``,
    ``numpy``, ``pdf``, ``torch`` (a ``torch.save`` zip archive), ``zip``, ``damaged`` (a zip
    archive cut short), ``pickle``, ``text``, ``empty`` or ``binary``. Raises OSError when the file cannot be read."""
    import zipfile

    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        return "empty", "an empty file (0 bytes)"
    for magic, kind, description in _MAGIC:
        if head.startswith(magic):
            if kind == "zip":
                try:
                    with zipfile.ZipFile(path) as archive:
                        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in archive.namelist()):
                            return "torch", "a PyTorch file (torch.save)"
                except zipfile.BadZipFile:
                    return "damaged", "a damaged or truncated zip archive"
            return kind, description
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text:
        return "text", "a text file"
    return "binary", "a binary file of an unknown kind"
