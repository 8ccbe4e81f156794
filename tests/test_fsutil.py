"""Atomic writes (mlebench.fsutil.atomic_path) on file systems that refuse them — read-only, full,
a parent that is a file, a name too long — end in one OutputError line naming the file and the
cause, leave no partial or temporary file and leave an old file as it was; and ``sniff`` names
files by their first bytes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from mlebench.errors import OutputError
from mlebench.fsutil import atomic_path, sniff, write_bytes_atomically


def test_a_write_is_atomic_and_replaces_the_old_file(tmp_path: Path):
    target = tmp_path / "a" / "b.txt"
    write_bytes_atomically(target, b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("stopped mid-write")
    assert target.read_bytes() == b"old" and sorted(p.name for p in target.parent.iterdir()) == ["b.txt"]
    write_bytes_atomically(target, b"new")
    assert target.read_bytes() == b"new"


@pytest.mark.parametrize("where,cause", [("read-only", "the file system is read-only"),
                                         ("full", "the disk is full (no space left on device)")])
def test_a_refused_write_is_one_line_and_leaves_nothing(tmpfs, where: str, cause: str):
    folder = tmpfs(where, readonly=where == "read-only", full=where == "full")
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(OutputError) as raised:
        write_bytes_atomically(folder / "report.md", bytes(200_000))
    assert str(raised.value).startswith(f"cannot write {folder / 'report.md'}: {cause}")
    assert sorted(p.name for p in folder.iterdir()) == before  # no partial file, no temporary file


def test_a_parent_that_is_a_file_and_a_name_too_long_are_named(tmp_path: Path):
    (tmp_path / "blocker").write_text("a file")
    with pytest.raises(OutputError, match="cannot write .*blocker/x.md: "):
        write_bytes_atomically(tmp_path / "blocker" / "x.md", b"x")
    with pytest.raises(OutputError, match="the name is too long"):
        write_bytes_atomically(tmp_path / ("n" * 300), b"x")
    assert (tmp_path / "blocker").read_text() == "a file"


def test_sniff_names_files_by_their_first_bytes(tmp_path: Path):
    sqlite3.connect(tmp_path / "s.sqlite").execute("CREATE TABLE t (x)").connection.close()
    torch.save({"w": torch.ones(1)}, tmp_path / "w.pt")
    (tmp_path / "n.md").write_text("# notes\n")
    (tmp_path / "e").write_bytes(b"")
    (tmp_path / "b").write_bytes(bytes(range(256)))
    kinds = {name: sniff(tmp_path / name)[0] for name in ("s.sqlite", "w.pt", "n.md", "e", "b")}
    assert kinds == {"s.sqlite": "sqlite", "w.pt": "torch", "n.md": "text", "e": "empty", "b": "binary"}
