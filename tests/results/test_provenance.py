"""Provenance recorded with a run: ``git_commit`` with a fake git on PATH that answers a commit,
one that is outside a repository, and no git at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlebench.results import git_commit


def _fake_git(bin_dir: Path, script: str) -> None:
    bin_dir.mkdir()
    git = bin_dir / "git"
    git.write_text(f"#!/bin/sh\n{script}\n")
    git.chmod(0o755)


def test_git_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    _fake_git(tmp_path / "ok", f'[ "$1 $2" = "rev-parse HEAD" ] && echo {sha}')
    monkeypatch.setenv("PATH", str(tmp_path / "ok"))
    assert git_commit(tmp_path) == sha

    _fake_git(tmp_path / "norepo", "echo 'fatal: not a git repository' >&2; exit 128")
    monkeypatch.setenv("PATH", str(tmp_path / "norepo"))
    assert git_commit(tmp_path) is None

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git at all
    assert git_commit(tmp_path) is None
