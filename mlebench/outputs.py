"""Where commands write: one guard for every file a command writes, run before any work.

:func:`guard_output` looks at an output path the way a careful user would before overwriting it:

- what is there now (:func:`identify`): a results store, a checkpoint or stand-in (a
  ``torch.save`` file), a data set's folder or one of its files, a directory. None of these is
  ever replaced by a file of another kind (a report over a store, a PNG over a checkpoint). A
  command replaces a file of the kind it writes only where its own rule says so (training
  rewrites its checkpoint; ``pretrain`` replaces a stand-in that has its record beside it) or
  where ``--force`` says so;
- an input of the same command (the store a report reads, the checkpoint being evaluated);
- whether the folder can take the file: it is created and a probe file is written into it and
  synced, so that a path under ``/proc``, a read-only mount or a full disk is found now, as root
  too (permission bits do not stop root; only a real write tells). With ``expected_bytes`` the
  free space must hold the file as well.

Every refusal is one :class:`~mlebench.errors.OutputError` line naming the option, the path and
the reason; a file-system error is told by :func:`mlebench.fsutil.describe_os_error`, as every
write (:func:`mlebench.fsutil.atomic_path`) tells its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mlebench.errors import OutputError
from mlebench.fsutil import describe_os_error, sniff

#: what an existing file may be, beyond an ordinary file anything may replace
STORE, CHECKPOINT, DATA, DIRECTORY = "results store", "checkpoint", "data set", "directory"
PROBE_BYTES = 64 * 1024  # a probe this big meets a full disk; an empty file would not

@dataclass(frozen=True)
class Found:
    """What lies at a path: ``kind`` one of :data:`STORE`, :data:`CHECKPOINT`, :data:`DATA`,
    :data:`DIRECTORY`, or ``"file"`` (anything else); ``description`` says it in words."""

    kind: str
    description: str


def _data_root_of(path: Path, data_roots: Sequence[Path]) -> Path | None:
    from mlebench.data import data_root_containing

    resolved = path.resolve()
    for root in data_roots:
        root = Path(root).expanduser().resolve()
        if resolved == root or root in resolved.parents:
            return root
    return data_root_containing(resolved)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long: nothing can be there (writing it says why)
        return False


def identify(path: Path, data_roots: Sequence[Path] = ()) -> Found | None:
    """What ``path`` holds now, or None when nothing is there."""
    path = Path(path).expanduser()
    if not _exists(path):
        return None
    root = _data_root_of(path, data_roots)
    if root is not None:
        whole = path.resolve() == root
        return Found(DATA, f"the data set folder {root}" if whole else f"a file of the data set at {root}")
    if path.is_dir():
        return Found(DIRECTORY, "a directory")
    try:
        kind, description = sniff(path)
    except OSError as exc:
        raise OutputError(f"{path} exists and cannot be read: {describe_os_error(exc, path)}") from None
    if kind == "sqlite":
        return Found(STORE, description)
    if kind in ("torch", "pickle"):
        return Found(CHECKPOINT, f"{description}: a checkpoint or weights")
    if kind == "empty":
        return None  # nothing to lose (a store adopts an empty file)
    return Found("file", description)


def same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name one file (the same inode where both exist, else the same path)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.expanduser().resolve() == b.expanduser().resolve()


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (a file, where a parent is one)."""
    for candidate in (path, *path.parents):
        try:
            candidate.lstat()
            return candidate
        except OSError:  # absent, or a name too long: look further up
            continue
    return path


def probe_folder(folder: Path, option: str, target: Path, expected_bytes: int = 0) -> None:
    """Prove that files can be written in ``folder``: create it (and its missing parents) and
    write and sync a probe file there; then remove the probe and the folders it created, so that
    a command refused later leaves nothing behind. With ``expected_bytes`` also check that much
    space is free. Refusals name ``option`` and ``target``."""
    folder = Path(folder).expanduser()
    anchor = _nearest_existing(folder)
    if anchor.exists() and not anchor.is_dir():
        raise OutputError(f"{option} {target} cannot be created: {anchor} is a file, not a directory")
    created = [p for p in (folder, *folder.parents) if p != anchor and anchor in p.parents]
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{option} {target} cannot be written: {describe_os_error(exc, target)}") from None
        try:
            fd, name = tempfile.mkstemp(prefix=".mlebench-probe-", dir=folder)
            try:
                os.write(fd, bytes(PROBE_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(name)
        except OSError as exc:  # the probe's own name says nothing to the user: name the folder
            reason = ("files cannot be created there" if exc.errno == errno.ENOENT
                      else describe_os_error(exc, Path(exc.filename or folder)))
            raise OutputError(f"{option} {target} cannot be written: {reason} ({folder})") from None
    finally:
        for made in created:  # deepest first
            with contextlib.suppress(OSError):
                made.rmdir()
    require_space(target, option, expected_bytes)


def require_space(target: Path, option: str, expected_bytes: int) -> None:
    """The folder of ``target`` has ``expected_bytes`` free (a file that size fits)."""
    if expected_bytes <= 0:
        return
    folder = _nearest_existing(Path(target).expanduser().parent)  # the folder itself may not exist yet
    free = shutil.disk_usage(folder).free
    if free < expected_bytes:
        raise OutputError(f"{option} {target} cannot be written: the disk is full ({free / 2**20:.1f} MiB "
                          f"free in {folder}, the file needs about {expected_bytes / 2**20:.1f} MiB)")


def guard_folder(path: Path, option: str) -> Path:
    """A command that writes a folder of its own (``data synth --out``): ``path`` is not a file,
    and its parent can be created and written (the command's own rule decides about what is
    inside an existing folder)."""
    path = Path(path).expanduser()
    if _exists(path) and not path.is_dir():
        found = identify(path)
        raise OutputError(f"{option} {path} is {found.description if found else 'a file'}, not a folder")
    outer = _data_root_of(path.parent, ())
    if outer is not None:
        raise OutputError(f"{option} {path} is inside the data set folder {outer}; write outside the data")
    check_name(path, option)
    probe_folder(path.parent, option, path)
    return path


def guard_output(path: Path, option: str, writes: str, *, replaces: Sequence[str] = (), force: bool = False,
                 data_roots: Sequence[Path] = (), inputs: Sequence[tuple[Path, str]] = (),
                 expected_bytes: int = 0) -> Path:
    """Refuse, before any work, to write the ``writes`` file (a report, a checkpoint, ...) that
    ``option`` names at ``path`` where that would destroy something, or where it cannot be
    written; returns ``path``.

    ``replaces``: the kinds of existing file the command's own rule lets it replace (a checkpoint
    writer: :data:`CHECKPOINT`); ``force``: ``--force`` lets it replace a file of the kind it
    writes (``writes`` is then one of the kinds above) that its own rule does not. A directory,
    a data set's file or folder (under ``data_roots`` or recognised by its layout) and any of
    the command's ``inputs`` ((path, what it is)) are never replaced.
    """
    path = Path(path).expanduser()
    for other, what in inputs:
        if other is not None and same_file(path, other):
            raise OutputError(f"{option} {path} is the {what} this command reads; writing there would destroy it")
    root = _data_root_of(path, data_roots)
    if root is not None:
        what = "the data set folder" if path.resolve() == root else "inside the data set folder"
        raise OutputError(f"{option} {path} is {what} {root}; write outside the data")
    found = identify(path, data_roots)
    if found is not None:
        if found.kind == DIRECTORY:
            raise OutputError(f"{option} {path} is a directory; give a file path")
        # A checkpoint writer replaces nothing but what its rule allows: an existing file of any
        # other kind (notes, an image) is something of the user's. Writers of reports, exports and
        # figures may replace an ordinary file (an older report), never a store or a checkpoint.
        precious = (STORE, CHECKPOINT) if writes not in (STORE, CHECKPOINT) else (STORE, CHECKPOINT, "file")
        if found.kind in precious and found.kind not in replaces and not (force and found.kind == writes):
            hint = "; add --force to replace it" if found.kind == writes else ""
            raise OutputError(f"{option} {path} is {found.description}; writing the {writes} there would destroy "
                              f"it{hint}")
    check_name(path, option)
    probe_folder(path.parent, option, path, expected_bytes)
    return path


def check_name(path: Path, option: str) -> None:
    """The file system takes ``path``'s name (the probe writes under another name)."""
    anchor = _nearest_existing(path.parent)
    try:
        limit = os.pathconf(anchor if anchor.is_dir() else anchor.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        return
    if len(path.name.encode()) > limit:
        raise OutputError(f"{option} {path} cannot be written: the name is too long ({len(path.name.encode())} "
                          f"bytes; the file system takes {limit})")
