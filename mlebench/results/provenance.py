"""Where a number came from: code version, package versions, threads, seeds, process.

Stored with every run (and, for the package versions, with every checkpoint) so that a result
can be traced and a rerun set up the same way. Nothing here touches the results file.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import torch

#: packages whose versions every run and checkpoint records
CORE_PACKAGES = ("mlebench", "torch", "numpy")


def package_versions(extra: Iterable[str] = ()) -> dict[str, str]:
    """Installed versions of :data:`CORE_PACKAGES` and ``extra`` (a method's ``versioned_packages``;
    "unknown" when absent)."""
    versions = {}
    for name in (*CORE_PACKAGES, *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def git_commit(path: str | Path | None = None) -> str | None:
    """HEAD commit of the git checkout containing ``path`` (default: this package's source).

    ``None`` when ``path`` is not in a git checkout, git is not installed or it fails.
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = proc.stdout.strip()
    if proc.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit):
        return None
    return commit


def process_identity() -> dict[str, Any]:
    """pid and host of this process: lets ``results list`` tell a crashed run from a live one."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def runtime_provenance(seed: int, world_size: int = 1) -> dict[str, Any]:
    """Thread counts, seed and process layout: what changes floating-point results on CPU."""
    return {
        "seed": int(seed),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "world_size": int(world_size),
        "cuda": torch.version.cuda,
        "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
