"""Every command that writes a file, against every target a file must never replace or cannot be
written to: a results store, a checkpoint, a stand-in, a data set's file and folder, a directory,
a path under /proc, a parent that is a file, a name too long, a read-only mount and a full disk.
Each refusal is one ``Error:`` line naming the option, the path and the cause; the exit status is
non-zero; the target is unchanged and nothing is left behind; and a training command refuses
before it trains. A new command is covered by adding one row to ``COMMANDS``.

Read-only and full file systems are real tmpfs mounts (permission bits do not stop root, so a
simulated check proves nothing): they need root, as CI runs; elsewhere those cases skip and say
how to run them."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch


from ..helpers import FAST, invoke


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """In-process model runs on one torch thread."""


@dataclass(frozen=True)
class Command:
    """A command and the option that names its output; ``args(target, ctx)`` builds its argv."""

    name: str
    option: str
    args: Callable[[Path, "Context"], list[object]]
    trains: bool = False
    allows: tuple[str, ...] = ()  # targets the command's own rule lets it replace


@dataclass(frozen=True)
class Context:
    root: Path  # a synthetic data set
    store: Path  # a results store with one finished run
    fresh_store: Path  # where a run may create its store


COMMANDS = [
    Command("report", "-o/--out", lambda t, c: ["report", "--results", c.store, "-o", t]),
    Command("results export", "-o/--out", lambda t, c: ["results", "export", "--results", c.store, "-o", t]),
    Command("data show", "-o/--out", lambda t, c: ["data", "show", "--data-root", c.root, "-o", t]),
    Command("data synth", "--out", lambda t, c: ["data", "synth", "--out", t, "--size", "32", "--n-train", "1",
                                                 "--n-val", "1", "--n-test", "1", "--workers", "1"],
            allows=("directory",)),
    Command("run", "--save-checkpoint", lambda t, c: ["run", "--data-root", c.root, "--results", c.fresh_store,
                                                      "--steps", "1", "--save-checkpoint", t, *FAST],
            trains=True, allows=("checkpoint", "stand-in")),
    Command("train", "--save-checkpoint", lambda t, c: ["train", "--data-root", c.root, "--steps", "1",
                                                        "--save-checkpoint", t, *FAST],
            trains=True, allows=("checkpoint", "stand-in")),
    Command("run --results", "--results", lambda t, c: ["run", "--data-root", c.root, "--results", t, "--steps", "1",
                                                        *FAST], trains=True, allows=("store",)),
    Command("pretrain", "--out", lambda t, c: ["pretrain", "--method", "mlesam", "--out", t, "--steps", "1",
                                               "--n-images", "2"], trains=True, allows=("stand-in",)),
    Command("check --update", "--baseline", lambda t, c: ["check", "--update", "--methods", "mlesam",
                                                          "--seeds", "0,1", "--baseline", t], trains=True),
]

#: target -> words the one error line must hold (besides the path); {root} is the data set
EXPECTED = {
    "store": "SQLite database (a results store)",
    "checkpoint": "PyTorch file",
    "stand-in": "PyTorch file",
    "data file": "inside the data set folder",
    "data folder": "data set",
    "directory": "directory",
    "under /proc": "cannot be written",
    "parent is a file": "is a file, not a directory",
    "name too long": "the name is too long",
    "read-only mount": "the file system is read-only",
    "full disk": "the disk is full",
}
#: (command, target) whose line says it in other words: click refuses a directory for a file
#: option itself; ``data synth`` writes a folder and names what is there instead
OWN_WORDS = {
    ("data synth", "store"): "not a folder",
    ("data synth", "checkpoint"): "not a folder",
    ("data synth", "stand-in"): "not a folder",
    ("data synth", "data file"): "not a folder",
    ("data synth", "data folder"): "refusing to overwrite",
}
CLICK_DIRECTORY = "is a directory"  # click.Path(dir_okay=False): "File '...' is a directory."


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Context:
    from mlebench.data.synthetic import generate_synthetic

    base = tmp_path_factory.mktemp("outputs")
    root = generate_synthetic(base / "data", size=32, n_train=2, n_val=1, n_test=1, seed=4, workers=1)
    store = base / "store.sqlite"
    here = Path.cwd()
    os.chdir(base)  # the run's figures go to base/runs
    try:
        result = invoke("run", "--data-root", root, "--results", store, "--steps", "1", "--protocol", "full",
                        "--save-checkpoint", base / "m.pt", *FAST)
    finally:
        os.chdir(here)
    assert result.exit_code == 0, result.output
    return Context(root=root, store=store, fresh_store=base / "fresh.sqlite")


@pytest.fixture()
def mounts(tmpfs) -> dict[str, Path]:
    return {"ro": tmpfs("ro", readonly=True), "full": tmpfs("full", full=True)}


def _make_target(kind: str, work: Path, context: Context, request: pytest.FixtureRequest) -> Path:
    if kind == "store":
        target = work / "other.sqlite"
        shutil.copyfile(context.store, target)
        return target
    if kind == "checkpoint":
        target = work / "trained.pt"
        torch.save({"format": 1, "state_dict": {"w": torch.ones(3)}}, target)
        return target
    if kind == "stand-in":
        target = work / "other_standin.pt"
        torch.save({"model": {"w": torch.ones(3)}}, target)
        return target
    if kind == "data file":
        return next(context.root.glob("img/*/val/*/*_rgb_front.png"))
    if kind == "data folder":  # laid out as DELIVER is (not a synthetic set, which data synth replaces)
        from ..conftest import write_deliver

        return write_deliver(work / "DELIVER")
    if kind == "directory":
        target = work / "folder"
        target.mkdir()
        return target
    if kind == "under /proc":
        return Path("/proc/no/such/dir/out.x")
    if kind == "parent is a file":
        (work / "blocker").write_text("a regular file")
        return work / "blocker" / "out.x"
    if kind == "name too long":
        return work / ("a" * 300 + ".x")
    mounts = request.getfixturevalue("mounts")  # only these cases mount
    return mounts["ro" if kind == "read-only mount" else "full"] / "out.x"


def _state(*folders: Path) -> dict[Path, bytes | None]:
    """Every file (bytes) and folder (None) under ``folders``."""
    seen: dict[Path, bytes | None] = {}
    for folder in folders:
        for path in [folder, *folder.rglob("*")] if folder.exists() else []:
            seen[path] = path.read_bytes() if path.is_file() else None
    return seen


CASES = [(c, t) for c in COMMANDS for t in EXPECTED if t not in c.allows]


@pytest.mark.parametrize("command,target", CASES, ids=[f"{c.name}->{t}" for c, t in CASES])
def test_a_command_never_writes_over_a_precious_file_or_where_it_cannot(
        command: Command, target: str, context: Context, work: Path, request: pytest.FixtureRequest):
    (work / "targets").mkdir()
    path = _make_target(target, work / "targets", context, request)
    watched = [work, context.root]
    before = _state(*watched)
    result = invoke(*command.args(path, context))
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    line = errors[0]
    shown = str(path) if len(str(path)) < 200 else path.name[:40]
    assert shown in line or f"'{path}'" in line, line
    words = OWN_WORDS.get((command.name, target), EXPECTED[target])
    alternatives = (words, CLICK_DIRECTORY) if target in ("directory", "data folder") else (words,)
    assert any(w in line for w in alternatives), (words, line)
    if command.trains:
        assert "training" not in result.output, result.output
    assert _state(*watched) == before  # the target and everything beside it as they were
    assert not context.fresh_store.exists()
