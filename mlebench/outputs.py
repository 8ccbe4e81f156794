"""Where commands write: checks that an output location can take a file before any work is done,
and that it does not hold something precious (a results store, a data set) the output would
destroy. Nothing here writes.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlebench.errors import ConfigError


def same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name one file (the same inode where both exist, else the same path)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.expanduser().resolve() == b.expanduser().resolve()


def refuse_overwriting(out: Path | None, protected: Path, what: str, option: str = "-o/--out") -> None:
    """An output path that is an input of the same command (the store a report reads) would
    destroy it: refuse, naming the option."""
    if out is not None and same_file(out, protected):
        raise ConfigError(f"{out} is the {what}; writing there would destroy it")


def _nearest_existing(path: Path) -> Path:
    probe = path
    while True:
        try:
            probe.lstat()
            return probe
        except FileNotFoundError:
            if probe.parent == probe:
                return probe
            probe = probe.parent
        except NotADirectoryError:  # a parent is a regular file
            probe = probe.parent


def check_writable_file(path: Path, what: str, in_place: bool = False) -> None:
    """``path`` can be created or replaced (its folder exists or can be made, and is writable);
    ``in_place``: an existing file is written in place (SQLite), so it must be writable too.
    Nothing is written; ``what`` names the option in the message."""
    path = Path(path).expanduser().absolute()
    if path.exists():
        if path.is_dir():
            raise ConfigError(f"{what} {path} is a directory; give a file path")
        if in_place and not os.access(path, os.W_OK):
            raise ConfigError(f"{what} {path} is read-only")
        folder = path.parent
    else:
        folder = _nearest_existing(path)
        if not folder.is_dir():
            raise ConfigError(f"{what} {path} cannot be created: {folder} is a file, not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} cannot be written: no write permission in {folder}")


def check_writable_dir(path: Path, what: str) -> None:
    """Files can be created in folder ``path`` (it exists or can be made); nothing is written."""
    path = Path(path).expanduser().absolute()
    anchor = _nearest_existing(path)
    if not anchor.is_dir():
        raise ConfigError(f"{what} {path} cannot be created: {anchor} is a file, not a directory")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} cannot be written: no write permission in {anchor}")


# First bytes of files a checkpoint must never replace, and of the files it may.
_FOREIGN_MAGIC = {b"SQLite format 3\x00": "an SQLite database (a results store?)", b"\x89PNG": "a PNG image",
                  b"\xff\xd8\xff": "a JPEG image", b"\x93NUMPY": "a NumPy array"}
_CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive; a legacy pickle


def check_checkpoint_target(path: Path, data_root: Path | None = None, option: str = "--save-checkpoint") -> None:
    """Training may write its checkpoint at ``path``: the location is writable, and an existing
    file there is a checkpoint (never a results store, a data file or anything else)."""
    path = Path(path).expanduser()
    check_writable_file(path, option)
    if data_root is not None:
        root = Path(data_root).expanduser().resolve()
        if path.resolve() == root or root in path.resolve().parents:
            raise ConfigError(f"{option} {path} is inside the data set folder {root}; "
                              "write checkpoints outside the data")
    if path.is_file():
        try:
            with open(path, "rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            raise ConfigError(f"{option} {path} exists and cannot be read: {exc}") from None
        for magic, what in _FOREIGN_MAGIC.items():
            if head.startswith(magic):
                raise ConfigError(f"{option} {path} is {what}; writing the checkpoint there would destroy it")
        if head and not head.startswith(_CHECKPOINT_MAGIC):
            raise ConfigError(f"{option} {path} exists and is not a checkpoint; refusing to overwrite it")

