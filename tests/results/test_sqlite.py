"""Reliability: non-finite data and checkpoints, read-only and corrupt results files, runs stopped
by signals or killed. Every case ends in one line naming the file or value, and nothing is lost:
files are compared byte for byte before and after."""

from __future__ import annotations

import functools
import io
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from mlebench import stats
from mlebench.cli import main
from mlebench.data import dataset_info, load_dataset
from mlebench.data.base import DatasetInfo, ModalitySpec, MultiModalDataset, SampleRef
from mlebench.data.check import check_dataset
from mlebench.errors import ConfigError, DataError
from mlebench.protocols import CaseResult, get_protocol
from mlebench.report.console import format_run_list
from mlebench.report.export import export_results
from mlebench.results import BootstrapSpec, case_counts, result_rows
from mlebench.results.store import STALE, UNKNOWN_LIVENESS, ResultsStore, open_store_for_reading
from mlebench.signals import Terminated, exit_interrupted, terminate_as_exception

REPO_ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _env(**extra: str) -> dict[str, str]:
    pythonpath = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": pythonpath, "PYTHONDONTWRITEBYTECODE": "1", **extra}


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of ``folder`` by name, with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# =============================================================================================
# 1. NaN and infinite values: refused by every loader, listed by `data check`; checkpoints too
# =============================================================================================

MC_H, MC_W = 4, 200  # MCubeS drops the left 192 columns, so images must be wider
MC_NAME = "outscene0001_1_0000000001"


def _write_mcubes(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for folder in ("polL_color", "polL_aolp_sin", "polL_aolp_cos", "polL_dolp", "NIR_warped", "GT", "list_folder"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (MC_H, MC_W, 3), dtype=np.uint8)).save(root / "polL_color" / f"{MC_NAME}.png")
    np.save(root / "polL_aolp_sin" / f"{MC_NAME}.npy", rng.uniform(-1, 1, (MC_H, MC_W)).astype(np.float32))
    np.save(root / "polL_aolp_cos" / f"{MC_NAME}.npy", rng.uniform(-1, 1, (MC_H, MC_W)).astype(np.float32))
    np.save(root / "polL_dolp" / f"{MC_NAME}.npy", rng.uniform(0, 1, (MC_H, MC_W)).astype(np.float32))
    Image.fromarray(rng.integers(0, 256, (MC_H, MC_W), dtype=np.uint8)).save(root / "NIR_warped" / f"{MC_NAME}.png")
    Image.fromarray(rng.integers(0, 20, (MC_H, MC_W), dtype=np.uint8)).save(root / "GT" / f"{MC_NAME}.png")
    for split in ("train", "val", "test"):
        (root / "list_folder" / f"{split}.txt").write_text(f"{MC_NAME}\n")
    return root


@pytest.fixture()
def mcubes_root(tmp_path: Path) -> Path:
    return _write_mcubes(tmp_path / "multimodal_dataset")


def _spoil_npy(path: Path, value: float, dtype=np.float32, at=(1, 195)) -> None:
    arr = np.load(path).astype(dtype)
    arr[at] = value
    np.save(path, arr)


@pytest.mark.parametrize(
    "folder, modality, value, dtype, reason",
    [
        ("polL_dolp", "dolp", math.nan, np.float32, r"holds NaN or infinite values \(1 NaN and 0 infinite of 800"),
        ("polL_aolp_cos", "aolp", math.inf, np.float32, r"holds NaN or infinite values \(0 NaN and 1 infinite of 800"),
        ("polL_aolp_sin", "aolp", -math.inf, np.float64, r"holds NaN or infinite values \(0 NaN and 1 infinite"),
        ("polL_dolp", "dolp", 1e300, np.float64, r"holds values beyond the float32 range"),
    ],
)
def test_mcubes_refuses_non_finite_arrays_naming_the_file(mcubes_root: Path, folder, modality, value, dtype, reason):
    bad = mcubes_root / folder / f"{MC_NAME}.npy"
    _spoil_npy(bad, value, dtype)
    before = bad.read_bytes()
    ds = load_dataset("mcubes", mcubes_root, "val", [modality])
    with pytest.raises(DataError, match=re.escape(str(bad)) + " " + reason) as err:
        ds[0]
    assert "\n" not in str(err.value)
    assert bad.read_bytes() == before

    # `data check` lists the file as unreadable, with the reason, and fails.
    report = check_dataset("mcubes", mcubes_root, [modality], ["val"])
    assert not report.ok
    assert len(report.unreadable) == 1
    assert re.match(re.escape(f"{modality if modality == 'dolp' else folder[5:]} file {bad} ") + reason,
                    report.unreadable[0]), report.unreadable
    result = invoke("data", "check", "--dataset", "mcubes", "--data-root", str(mcubes_root), "--modalities", modality,
                    "--split", "val")
    assert result.exit_code == 1, result.output
    assert "unreadable files (1):" in result.output and str(bad) in result.output
    assert "layout has problems" in result.output


def test_mcubes_finite_sample_still_decodes(mcubes_root: Path):
    sample = load_dataset("mcubes", mcubes_root, "val", ["rgb", "aolp", "dolp", "nir"])[0]
    assert all(torch.isfinite(sample[m].float()).all() for m in ("rgb", "aolp", "dolp", "nir"))
    assert check_dataset("mcubes", mcubes_root, None, ["val"]).ok


MU_H, MU_W = 4, 6
MU_WHERE = ("val", "clear", "day", "REC0001_frame_000001")


def _write_muses(root: Path, form: str) -> dict[str, Path]:
    split, weather, daytime, name = MU_WHERE
    rng = np.random.default_rng(1)
    files = {
        "frame": root / "frame_camera" / split / weather / daytime / f"{name}_frame_camera.png",
        "label": root / "gt_semantic" / split / weather / daytime / f"{name}_gt_labelTrainIds.png",
    }
    for p in files.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (MU_H, MU_W, 3), dtype=np.uint8)).save(files["frame"])
    Image.fromarray(rng.integers(0, 19, (MU_H, MU_W), dtype=np.uint8)).save(files["label"])
    for modality, folder in (("lidar", "lidar"), ("event", "event_camera")):
        path = root / "projected_to_rgb" / folder / split / weather / daytime / f"{name}_{folder}.{form}"
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = np.zeros((MU_H, MU_W, 3), dtype=np.float32)
        arr[1, 2] = (12.0, 30.0, -1.0)
        np.savez_compressed(path, arr) if form == "npz" else np.save(path, arr)
        files[modality] = path
    return files


@pytest.mark.parametrize("form", ["npz", "npy"])
@pytest.mark.parametrize("modality", ["lidar", "event"])
def test_muses_refuses_non_finite_projections_naming_the_file(tmp_path: Path, form: str, modality: str):
    files = _write_muses(tmp_path / "muses", form)
    bad = files[modality]
    arr = np.zeros((MU_H, MU_W, 3), dtype=np.float32)
    arr[2, 3, 1] = math.nan
    arr[0, 0, 0] = math.inf
    np.savez_compressed(bad, arr) if form == "npz" else np.save(bad, arr)
    ds = load_dataset("muses", tmp_path / "muses", "val", ["frame", modality])
    with pytest.raises(DataError, match=re.escape(f"{modality} file {bad} holds NaN or infinite values "
                                                  "(1 NaN and 1 infinite of 72; first at index (0, 0, 0))")):
        ds[0]
    report = check_dataset("muses", tmp_path / "muses", ["frame", modality], ["val"])
    assert [u.split(" holds ")[0] for u in report.unreadable] == [f"{modality} file {bad}"]


class _FloatLoader(MultiModalDataset):
    """A loader written without any thought of NaN: the base class checks it anyway."""

    info = DatasetInfo(name="floaty", classes=("a", "b"), palette=((0, 0, 0), (1, 1, 1)),
                       modalities=(ModalitySpec("thermal", "float32 thermal"), ModalitySpec("pair", "two files")),
                       splits=("val",))

    def index(self) -> list[SampleRef]:
        return [SampleRef(id=p.stem, paths={"thermal": p, "pair": (p.with_suffix(".a"), p.with_suffix(".b"))},
                          label=p.with_suffix(".label")) for p in sorted(self.root.glob("*.raw"))]

    def decode(self, ref: SampleRef) -> dict[str, Any]:
        values = torch.from_numpy(np.fromfile(ref.paths["thermal"], dtype=np.float32).reshape(1, 2, 2))
        sample = {m: values.expand(3, 2, 2).clone() for m in self.modalities}
        return {**sample, "label": torch.zeros(2, 2, dtype=torch.int64), "meta": {"id": ref.id}}


@pytest.mark.parametrize("modality, named", [("thermal", "{raw}"), ("pair", "{a} / {b}")])
def test_a_new_loader_gets_the_check_for_free(tmp_path: Path, modality: str, named: str):
    raw = tmp_path / "x.raw"
    np.array([1.0, math.nan, 2.0, 3.0], dtype=np.float32).tofile(raw)
    ds = _FloatLoader(tmp_path, "val", [modality])
    where = named.format(raw=raw, a=raw.with_suffix(".a"), b=raw.with_suffix(".b"))
    with pytest.raises(DataError, match=re.escape(f"{modality} file {where} holds NaN or infinite values (3 NaN")):
        ds[0]
    with pytest.raises(DataError, match="holds NaN"):
        ds.decode(ds.refs[0])  # whoever calls decode
    np.array([1.0, 0.0, 2.0, 3.0], dtype=np.float32).tofile(raw)
    assert ds[0][modality].shape == (3, 2, 2)


# -- checkpoints -------------------------------------------------------------------------------


def _method():
    from mlebench.registry import build_method

    return build_method("mlesam", dataset_info("synthetic"), ("rgb", "depth"), "tiny", sam2_checkpoint=None)


@pytest.mark.parametrize("value", [math.nan, -math.inf])
def test_checkpoint_with_non_finite_weights_is_refused_untouched(tmp_path: Path, value: float):
    from mlebench.engine.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    method = _method()
    path = save_checkpoint(method, tmp_path / "m.pt", extra={"step": 3})
    blob = torch.load(path, weights_only=True)
    keys = list(blob["state_dict"])
    first_bad, later_bad = keys[len(keys) // 2], keys[-1]
    for key in (first_bad, later_bad):
        blob["state_dict"][key] = blob["state_dict"][key].clone()
        blob["state_dict"][key].view(-1)[0] = value
    torch.save(blob, path)
    saved = path.read_bytes()

    target = _method()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ConfigError, match=re.escape(f"checkpoint {path} holds NaN or infinite weights: {first_bad} "
                                                    f"has 1 of ")):
        load_checkpoint(target, path)
    after = target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing half-loaded
    assert path.read_bytes() == saved


# =============================================================================================
# 2. Read-only and corrupt results files
# =============================================================================================

SYN = dataset_info("synthetic")
MODS = ("rgb", "depth")
SAMPLE_IDS = [f"s{i:02d}" for i in range(8)]


def _store_run(store: ResultsStore, method: str, quality: float, seed: int) -> str:
    """A finished missing-modality run with realistic rows, intervals and per-sample counts."""
    proto = get_protocol("missing-modality")
    results = []
    for i, case in enumerate(proto.cases(MODS, SYN)):
        rng = np.random.default_rng(seed * 100 + i)
        truth = rng.integers(0, 400, size=(len(SAMPLE_IDS), SYN.num_classes)) * (rng.random((8, SYN.num_classes)) < .4)
        tp = np.floor(truth * quality).astype(np.int64)
        counts = np.stack([tp, rng.integers(0, 30, size=truth.shape) * (truth > 0), truth - tp], axis=1)
        iou = stats.iou_from_counts(counts[:, 0], counts[:, 1], counts[:, 2]).tolist()
        miou = stats.miou_from_counts(counts[:, 0], counts[:, 1], counts[:, 2], SYN.miou_convention)
        results.append(CaseResult(case, miou, 0.5, 0.5, iou, len(SAMPLE_IDS), sample_ids=SAMPLE_IDS, counts=counts))
    rows = result_rows("missing-modality", results, proto.summary(results, MODS), SYN.classes, SYN.miou_convention,
                       BootstrapSpec(50))
    run_id = store.start_run(method=method, variant="v", dataset="synthetic", train_modalities=MODS, preset="tiny",
                             config={"parameters": {"trainable": 1000}}, seed=seed, versions={"mlebench": "t"},
                             protocol="missing-modality", split="val", miou_convention=SYN.miou_convention)
    store.finish_run(run_id, rows, counts=case_counts("missing-modality", results))
    return run_id


def _make_store(path: Path, runs: int = 2) -> list[str]:
    store = ResultsStore(path)
    return [_store_run(store, "mlesam" if i % 2 == 0 else "cmnext", 0.6 - 0.1 * i, i) for i in range(runs)]


def _make_store_with_wal(path: Path) -> None:
    """A store whose last run lives only in its -wal file, as a writer that died leaves it: a
    second connection holds the WAL open while the run is written, then the files are copied."""
    scratch = Path(tempfile.mkdtemp())
    try:
        first = scratch / path.name
        _make_store(first, runs=1)
        holder = sqlite3.connect(first)
        holder.execute("SELECT count(*) FROM runs").fetchone()
        _store_run(ResultsStore(first), "cmnext", 0.5, 1)
        assert Path(f"{first}-wal").stat().st_size > 0
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(first, path)
        shutil.copyfile(f"{first}-wal", f"{path}-wal")
        holder.close()
    finally:
        shutil.rmtree(scratch)


def _reading_outputs(store: ResultsStore) -> dict[str, Any]:
    """What `results list`, `results export` and `report` show, from the API."""
    from mlebench.report.markdown import table_to_markdown
    from mlebench.report.tables import TableOptions, build_tables

    buffer = io.StringIO()
    export_results(store, "csv", buffer)
    return {"list": format_run_list(store), "export": buffer.getvalue(),
            "report": "\n\n".join(table_to_markdown(t) for t in build_tables(store, None, None, TableOptions())),
            "counts": sum(len(store.case_counts(r)) for r in store.runs()["id"])}


_READER = r"""
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.results.test_sqlite import _reading_outputs, _try_writes
from mlebench.errors import ConfigError
from mlebench.results.store import open_store_for_reading
for path in map(Path, sys.argv[2:]):
    out = {"uid": os.geteuid()}
    try:
        out.update(_reading_outputs(open_store_for_reading(path)))
    except ConfigError as exc:
        out["read_error"] = str(exc)
    out["write_errors"] = _try_writes(path)
    print(json.dumps(out))
"""


def _try_writes(path: Path) -> list[str]:
    """Every way of writing: the messages (one per attempt)."""
    messages = []
    for attempt in ("open", "readonly-start"):
        try:
            if attempt == "open":
                store = ResultsStore(path)
            else:
                store = ResultsStore(path, readonly=True)
            store.start_run(method="m", variant="v", dataset="synthetic", train_modalities=["rgb"], preset="tiny",
                            config={}, seed=0, versions={})
            messages.append("written")
        except ConfigError as exc:
            messages.append(str(exc))
    return messages


def _drop_privileges() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _as_other_user(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """Run ``args`` as a user without write access to what the test made read-only: root
    ignores file modes, so as root the child runs as ``nobody`` (through ``setpriv`` where there
    is one)."""
    preexec = None
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv:
            args = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *args]
        else:
            preexec = _drop_privileges
    return subprocess.run(args, preexec_fn=preexec, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
                          **kwargs)


@functools.lru_cache(maxsize=None)
def _other_user_problem() -> str:
    """Why a child cannot run as another user here ('' when it can, or when not root)."""
    if os.geteuid() != 0:
        return ""
    try:
        probe = _as_other_user([sys.executable, "-c", "import mlebench"], env=_env())
    except OSError as exc:  # e.g. the interpreter lives in a folder only root may enter
        return str(exc)
    return "" if probe.returncode == 0 else probe.stderr.strip()[-200:]


def _shared_dir() -> Path:
    """A folder another user can enter (pytest's tmp_path is private to its owner)."""
    problem = _other_user_problem()
    if problem:
        pytest.skip(f"cannot run as an unprivileged user here: {problem}")
    folder = Path(tempfile.mkdtemp(prefix="mlebench-ro-"))
    folder.chmod(0o755)
    scratch = folder / "scratch"
    scratch.mkdir()
    scratch.chmod(0o777)
    return folder


def _remove_shared_dir(folder: Path) -> None:
    for p in [folder, *folder.rglob("*")]:
        p.chmod(0o777 if p.is_dir() else 0o666)
    shutil.rmtree(folder)


def _child_env(shared: Path) -> dict[str, str]:
    return _env(MPLCONFIGDIR=str(shared / "scratch"), HOME=str(shared / "scratch"))


def _make_read_only(folder: Path, file_only: bool) -> None:
    for p in folder.iterdir():
        p.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    folder.chmod(0o777 if file_only else 0o555)


LAYOUTS = {
    # name: (how the store is left, read-only file only (folder writable), files left)
    "folder, checkpointed": ("clean", False, ["r.sqlite"]),
    "folder, WAL with -shm": ("wal", False, ["r.sqlite", "r.sqlite-shm", "r.sqlite-wal"]),
    "folder, WAL without -shm": ("wal-no-shm", False, ["r.sqlite", "r.sqlite-wal"]),
    "file only": ("wal-no-shm", True, ["r.sqlite", "r.sqlite-wal"]),
    "folder, empty file": ("empty", False, ["r.sqlite"]),
    "folder only, writable file": ("clean", None, ["r.sqlite"]),
}


@pytest.fixture(scope="module")
def read_only_stores() -> Iterator[dict[str, dict[str, Any]]]:
    """Every layout of LAYOUTS made read-only, then read and written by one child process run as
    another user; per layout what it saw and the folder's files before and after."""
    shared = _shared_dir()
    cases: dict[str, dict[str, Any]] = {}
    try:
        for number, (layout, (how, file_only, left)) in enumerate(LAYOUTS.items()):
            folder = shared / f"store{number}"
            folder.mkdir()
            path = folder / "r.sqlite"
            if how == "clean":
                _make_store(path)
            elif how == "empty":
                path.touch()
            else:
                _make_store_with_wal(path)
                if how == "wal":  # and a -shm file, as a reader leaves it
                    probe = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                    probe.execute("SELECT count(*) FROM runs").fetchone()
                    probe.close()
            files = sorted(p.name for p in folder.iterdir())
            # What a reader with write access sees, from a copy.
            reference = shared / "scratch" / f"reference{number}"
            shutil.copytree(folder, reference)
            expected = _reading_outputs(open_store_for_reading(reference / "r.sqlite"))
            if file_only is None:  # the file stays writable, its folder does not
                path.chmod(0o666)
                folder.chmod(0o555)
            else:
                _make_read_only(folder, file_only)
            cases[layout] = {"path": path, "folder": folder, "files": files, "left": left, "expected": expected,
                             "before": _files(folder)}
        paths = [str(c["path"]) for c in cases.values()]
        child = _as_other_user([sys.executable, "-c", _READER, str(REPO_ROOT), *paths], env=_child_env(shared))
        assert child.returncode == 0, child.stderr
        for case, line in zip(cases.values(), child.stdout.strip().splitlines()[-len(cases):]):
            case["got"] = json.loads(line)
            case["after"] = _files(case["folder"])
        yield cases
    finally:
        _remove_shared_dir(shared)


@pytest.mark.parametrize("layout", [k for k in LAYOUTS if LAYOUTS[k][1] is not None])
def test_read_only_store_reads_fully_refuses_writes_and_changes_nothing(read_only_stores, layout: str):
    case = read_only_stores[layout]
    how, file_only, _ = LAYOUTS[layout]
    path, got, expected = case["path"], case["got"], case["expected"]
    assert case["files"] == case["left"]
    assert got["uid"] != 0
    assert "read_error" not in got, got.get("read_error")
    assert {k: got[k] for k in expected} == expected
    if how != "empty":
        assert expected["list"].count(" finished ") == 2 and expected["counts"] == 6
    else:
        assert expected["list"] == "no runs"
    assert got["write_errors"] == [
        f"cannot write results file {path}: the file is read-only (reading it works: `mlebench results list "
        f"--results {path}`)",
        f"results file {path} was opened read-only; cannot write to it",
    ]
    before, after = case["before"], case["after"]
    if file_only:  # a writable folder: SQLite may leave an empty -shm; the store and its WAL never change
        assert after["r.sqlite"] == before["r.sqlite"] and after["r.sqlite-wal"] == before["r.sqlite-wal"]
    else:
        assert after == before


def test_writable_file_in_read_only_folder_is_refused_for_writing(read_only_stores):
    case = read_only_stores["folder only, writable file"]
    path, folder, got = case["path"], case["folder"], case["got"]
    assert got["uid"] != 0
    assert got["list"].count(" finished ") == 2
    assert got["write_errors"][0] == (
        f"cannot write results file {path}: its folder {folder} is read-only, and SQLite needs to create "
        f"r.sqlite-wal and r.sqlite-shm there (reading it works: `mlebench results list --results {path}`)")
    assert case["after"] == case["before"]


_CLI_READER = r"""
import json, sys
from click.testing import CliRunner
from mlebench.cli import main
out = {}
for name, args in (("list", ["results", "list"]), ("export", ["results", "export", "--format", "csv"]),
                   ("report", ["report", "--format", "markdown"])):
    r = CliRunner().invoke(main, args + ["--results", sys.argv[1]])
    out[name] = [r.exit_code, r.output]
print(json.dumps(out))
"""


def test_cli_reading_commands_work_on_a_read_only_store():
    """`results list`, `results export` and `report` in a read-only folder (needs the CLI to open
    stores with ``open_store_for_reading``)."""
    shared = _shared_dir()
    try:
        folder = shared / "store"
        folder.mkdir()
        path = folder / "r.sqlite"
        _make_store_with_wal(path)
        _make_read_only(folder, file_only=False)
        before = _files(folder)
        child = _as_other_user([sys.executable, "-c", _CLI_READER, str(path)], env=_child_env(shared))
        assert child.returncode == 0, child.stderr
        got = json.loads(child.stdout.strip().splitlines()[-1])
        assert got["list"][0] == 0, got["list"][1]
        assert got["list"][1].count(" finished ") == 2
        assert got["export"][0] == 0 and got["export"][1].startswith("run_id,") and got["export"][1].count("\n") > 20
        assert got["report"][0] == 0, got["report"][1]
        assert "mlesam" in got["report"][1] and "cmnext" in got["report"][1]
        assert _files(folder) == before
    finally:
        _remove_shared_dir(shared)


def _page_size(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:18], "big")


def _wal_pages(wal: Path, page_size: int) -> set[int]:
    data = wal.read_bytes()
    return {int.from_bytes(data[o:o + 4], "big") for o in range(32, len(data), 24 + page_size)}


def _corrupt_page(path: Path, target: str) -> int:
    """Overwrite the first 64 bytes of a page of ``path`` that no WAL frame replaces: one in the
    middle of the file, or the root page of an index (preferably one of table ``target``);
    returns its number (1-based)."""
    size = _page_size(path)
    in_wal = _wal_pages(Path(f"{path}-wal"), size) if Path(f"{path}-wal").exists() else set()
    n_pages = path.stat().st_size // size
    if target == "middle":
        candidates = range(n_pages // 2, n_pages + 1)
    else:
        with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as conn:  # the main file only
            candidates = [r[0] for r in conn.execute(
                "SELECT rootpage FROM sqlite_master WHERE type = 'index' ORDER BY tbl_name != ?, rootpage", (target,))]
    page = next(p for p in candidates if p not in in_wal)
    with open(path, "r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(b"\xa5" * 64)
    return page


CORRUPT = re.escape(" is corrupt: ") + r"[^\n]+" + re.escape(" (it was left as it is; restore it from a backup)")


@pytest.mark.parametrize("target", ["middle", "results"], ids=["middle page", "index page"])
@pytest.mark.parametrize("with_wal", [False, True], ids=["checkpointed", "with WAL"])
def test_corrupt_store_is_named_and_never_modified(tmp_path: Path, with_wal: bool, target: str):
    path = tmp_path / "store" / "r.sqlite"
    if with_wal:
        _make_store_with_wal(path)
    else:
        _make_store(path)
    _corrupt_page(path, target)
    before = _files(path.parent)
    message = re.escape(f"results file {path}") + CORRUPT

    for opening in (lambda: open_store_for_reading(path), lambda: ResultsStore(path)):
        with pytest.raises(ConfigError) as err:
            opening().start_run(method="m", variant="v", dataset="d", train_modalities=["rgb"], preset="p",
                                config={}, seed=0, versions={})
        assert re.fullmatch(message, str(err.value)), str(err.value)
    for args in (["results", "list"], ["results", "export"], ["report"], ["compare", "a", "b"]):
        result = invoke(*args, "--results", str(path))
        assert result.exit_code == 1, result.output
        assert re.fullmatch("Error: " + message + "\n", result.output), result.output
    after = _files(path.parent)
    assert after["r.sqlite"] == before["r.sqlite"]
    if with_wal:
        assert after["r.sqlite-wal"] == before["r.sqlite-wal"]
    else:  # a read-only connection may leave an empty WAL behind, never one with content
        assert after.get("r.sqlite-wal", b"") == b""


def test_store_damaged_after_opening_is_named_and_never_modified(tmp_path: Path):
    """Damage that appears while a store is open: every read and write names the file as corrupt."""
    path = tmp_path / "r.sqlite"
    run_id = _make_store(path, runs=1)[0]
    reader, writer = open_store_for_reading(path), ResultsStore(path)
    with sqlite3.connect(path) as conn:
        runs_root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    conn.close()
    size = _page_size(path)
    with open(path, "r+b") as fh:
        fh.seek((runs_root - 1) * size)
        fh.write(b"\xa5" * 64)
    before = _files(tmp_path)
    message = re.escape(f"results file {path}") + CORRUPT
    calls = [reader.runs, writer.runs, lambda: reader.results(run_ids=[run_id]),
             lambda: writer.start_run(method="m", variant="v", dataset="d", train_modalities=["rgb"], preset="p",
                                      config={}, seed=0, versions={}),
             lambda: writer.fail_run(run_id, "x")]
    for call in calls:
        with pytest.raises(ConfigError) as err:
            call()
        assert re.fullmatch(message, str(err.value)), str(err.value)
    after = _files(tmp_path)
    assert after["r.sqlite"] == before["r.sqlite"] and after.get("r.sqlite-wal", b"") == b""


def test_undecodable_stored_values_are_reported_as_corrupt(tmp_path: Path):
    path = tmp_path / "r.sqlite"
    run_id = _make_store(path, runs=1)[0]
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE run_samples SET sample_ids = x'00ff00'")
    with pytest.raises(ConfigError, match=re.escape(f"results file {path} is corrupt: error: ")):
        open_store_for_reading(path).case_counts(run_id)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runs SET config = '{not json'")
    with pytest.raises(ConfigError, match=re.escape(f"results file {path} is corrupt: JSONDecodeError: ")):
        open_store_for_reading(path).runs()


def test_missing_store_for_reading_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match=re.escape(f"results file {tmp_path / 'nope.sqlite'} does not exist")):
        open_store_for_reading(tmp_path / "nope.sqlite")
    assert not (tmp_path / "nope.sqlite").exists()


# =============================================================================================
# 3. SIGTERM, Ctrl-C and SIGKILL: failed or stale, never "running" forever
# =============================================================================================

_RUNNER = r"""
import sys, time
from mlebench.results.store import ResultsStore
from mlebench.signals import Terminated, exit_interrupted, terminate_as_exception
store = ResultsStore(sys.argv[1])
try:
    with terminate_as_exception():          # what run_job's body is wrapped in
        run_id = store.start_run(method="mlesam", variant="v", dataset="synthetic", train_modalities=["rgb"],
                                 preset="tiny", config={}, seed=0, versions={})
        try:
            print(run_id, flush=True)        # ready: the handler is installed and the run started
            time.sleep(600)                  # "training"
        except BaseException as exc:         # run_job's handler
            store.fail_run(run_id, f"{type(exc).__name__}: {exc}")
            raise
except (KeyboardInterrupt, Terminated) as exc:  # the CLI's handler
    exit_interrupted(exc)
"""


def _start_runner(path: Path) -> tuple[subprocess.Popen, str]:
    child = subprocess.Popen([sys.executable, "-c", _RUNNER, str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_env())
    run_id = child.stdout.readline().strip()
    if not run_id:
        child.kill()
        raise AssertionError(f"child died early: {child.communicate()[1]}")
    return child, run_id


@pytest.mark.parametrize("signum, status, line, error", [
    (signal.SIGTERM, 143, "Error: terminated by SIGTERM", "Terminated: terminated by SIGTERM"),
    (signal.SIGINT, 130, "Error: interrupted by Ctrl-C (SIGINT)", "KeyboardInterrupt: "),
], ids=["SIGTERM", "SIGINT"])
def test_signal_marks_the_run_failed_and_exits_with_one_line(tmp_path: Path, signum, status, line, error):
    path = tmp_path / "r.sqlite"
    store = ResultsStore(path)
    keep = _store_run(store, "mlesam", 0.6, 0)
    kept = store.results(run_ids=[keep])
    child, run_id = _start_runner(path)
    assert store.runs().set_index("id").loc[run_id, "state"] == "running"
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == status, stderr
    assert stderr.strip().splitlines() == [line]
    run = store.runs().set_index("id").loc[run_id]
    assert (run["status"], run["state"], run["error"]) == ("failed", "failed", error)
    assert run["ended_at"] is not None
    assert len(kept) > 50 and store.results(run_ids=[keep]).equals(kept)  # the other run is intact


def test_killed_run_lists_as_stale(tmp_path: Path):
    path = tmp_path / "r.sqlite"
    store = ResultsStore(path)
    child, run_id = _start_runner(path)
    assert store.runs().set_index("id").loc[run_id, "state"] == "running"
    assert re.search(rf"{run_id} .* running ", format_run_list(store))
    child.kill()
    child.communicate(timeout=120)
    run = store.runs().set_index("id").loc[run_id]
    assert (run["status"], run["state"]) == ("running", STALE)
    assert re.search(rf"{run_id} .* stale \(process gone\) ", format_run_list(store)), format_run_list(store)
    result = invoke("results", "list", "--results", str(path))
    assert result.exit_code == 0 and "stale (process gone)" in result.output
    # The store is still fully writable and the stale run can be marked failed.
    store.fail_run(run_id, "killed")
    assert store.runs().set_index("id").loc[run_id, "state"] == "failed"


def test_running_state_of_live_reused_and_foreign_processes(tmp_path: Path):
    path = tmp_path / "r.sqlite"
    store = ResultsStore(path)
    run_id = store.start_run(method="m", variant="v", dataset="synthetic", train_modalities=["rgb"], preset="tiny",
                             config={}, seed=0, versions={})
    state = lambda: store.runs().set_index("id").loc[run_id, "state"]  # noqa: E731
    assert state() == "running"  # this very process
    with sqlite3.connect(path) as conn:  # the pid now belongs to a process younger than the run
        conn.execute("UPDATE runs SET started_at = '2000-01-01T00:00:00.000000+00:00'")
    assert state() == STALE
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runs SET host = 'another-machine'")
    assert state() == UNKNOWN_LIVENESS == "running?"
    assert "running?" in format_run_list(store)


def test_terminate_as_exception_restores_handlers_and_respects_ignored_signals():
    before = signal.getsignal(signal.SIGTERM)
    with terminate_as_exception():
        assert signal.getsignal(signal.SIGTERM) not in (before, signal.SIG_DFL)
        with pytest.raises(Terminated) as err:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10**7):  # the handler runs between bytecodes, at once
                pass
        assert (err.value.code, str(err.value), err.value.signum) == (143, "terminated by SIGTERM", signal.SIGTERM)
        assert isinstance(err.value, SystemExit)
    assert signal.getsignal(signal.SIGTERM) == before
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with terminate_as_exception():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # nohup stays nohup
    finally:
        signal.signal(signal.SIGHUP, old)


def test_exit_interrupted_one_line_and_status(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as err:
        exit_interrupted(KeyboardInterrupt())
    assert err.value.code == 130
    with pytest.raises(SystemExit) as err:
        exit_interrupted(Terminated(signal.SIGTERM))
    assert err.value.code == 143
    assert capsys.readouterr().err.splitlines() == ["Error: interrupted by Ctrl-C (SIGINT)",
                                                    "Error: terminated by SIGTERM"]


def test_terminate_as_exception_as_a_decorator():
    """``@terminate_as_exception()`` on ``run_job``: installed for each call, removed after."""
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    @terminate_as_exception()
    def job() -> None:
        seen.append(signal.getsignal(signal.SIGTERM))
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10**7):
            pass

    for _ in range(2):
        with pytest.raises(Terminated, match="terminated by SIGTERM"):
            job()
        assert signal.getsignal(signal.SIGTERM) == before
    assert len(seen) == 2 and before not in seen
