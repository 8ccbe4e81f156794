"""The reliability sweep of `mlebench run / train / eval / data`: every mistake a new user made
ends in one clear line that names the file, option or value, a non-zero exit, and nothing lost
(no results row, no clobbered file, no half-written output)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from mlebench.cli import main
from mlebench.config import read_config, validate_sections
from mlebench.data import load_dataset
from mlebench.data.deliver import deliver_file
from mlebench.data.synthetic import generate_synthetic
from mlebench.engine.checkpoint import read_checkpoint
from mlebench.data.check import check_eval_files
from mlebench.engine.progress import CountingDataset
from mlebench.engine.train import NonFiniteLoss, TrainConfig, train
from mlebench.errors import DataError
from mlebench.results import ResultsStore

FAST = ["--weights", "none"]
SMALL_TRAINING = "train: {batch_size: 2, crop_size: 64, base_size: 64}\n"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """In-process model runs on one torch thread."""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("reliability") / "s", size=64, n_train=4, n_val=2, n_test=1,
                              workers=1)


@pytest.fixture()
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of its own, so that a default runs/ folder would show up here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def refused(result, code: int, *parts: str) -> str:
    """The one error line of a refused command, after checking exit code and message."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    for part in parts:
        assert part in errors[0], (part, errors[0])
    return errors[0]


def snapshot(*paths: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in paths}


def unchanged(before: dict[Path, bytes]) -> bool:
    return all(p.read_bytes() == data for p, data in before.items())


def existing_store(path: Path) -> Path:
    ResultsStore(path)  # an empty mlebench results file
    for extra in path.parent.glob(path.name + "-*"):  # WAL side files: not part of the comparison
        extra.unlink()
    return path


# --------------------------------------------------------------------------------------------
# 1. typed configuration
# --------------------------------------------------------------------------------------------
YAML_MISTAKES = [
    ("train: {lr: fast}\n", ["train.lr = 'fast'", "valid number"]),
    ("train: {batch_size: two}\n", ["train.batch_size = 'two'", "valid integer"]),
    ("train: {batch_size: 0}\n", ["train.batch_size = 0", "greater than or equal to 1"]),
    ("train: {batch_size: true}\n", ["train.batch_size = True", "valid integer"]),
    ("train: {crop_size: 0}\n", ["train.crop_size = 0", "greater than or equal to 1"]),
    ('method: {lora_rank: "big"}\n', ["method.lora_rank = 'big'", "valid integer", "lora_rank is int"]),
    ("method: {lora_rnk: 4}\n", ["unknown method option(s) lora_rnk for mlesam", "known: ", "lora_rank"]),
    ("protocol: {sweeps: false}\n", ["unknown protocol option(s) sweeps for noise; known: sweep"]),
    ('protocol: {sweep: "no"}\n', ["protocol.sweep = 'no'", "valid boolean"]),
    ("train: {seed: 1}\n", ["train.seed = 1 is not read from a config file", "use --seed"]),
    ("train: {device: cuda}\n", ["train.device = 'cuda' is not read from a config file", "use --device"]),
]


@pytest.mark.parametrize("text, parts", YAML_MISTAKES, ids=[t.strip() for t, _ in YAML_MISTAKES])
def test_config_values_are_typed_and_checked_before_anything_runs(root: Path, work: Path, text: str, parts):
    config = work / "c.yaml"
    config.write_text(text)
    db = work / "r.sqlite"
    result = invoke("run", "--protocol", "noise", "--data-root", root, "--config", config, "--results", db,
                    "--steps", "1", *FAST)
    refused(result, 1, f"Error: config {config}: ", *parts)
    assert "training mlesam" not in result.output
    assert not db.exists() and not (work / "runs").exists()


def test_train_refuses_the_same_config_mistakes(root: Path, work: Path):
    config = work / "c.yaml"
    config.write_text("train: {seed: 1}\n")
    refused(invoke("train", "--data-root", root, "--config", config, *FAST), 1, "train.seed", "use --seed")
    config.write_text("train: {lr: 0}\n")
    refused(invoke("train", "--data-root", root, "--config", config, *FAST), 1, "train.lr = 0", "greater than 0")
    assert not (work / "runs").exists()


def test_yaml_float_strings_are_floats_when_they_are_float_literals(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("train: {lr: 1e-4, weight_decay: 1.0e-2, warmup_ratio: '.5'}\nprotocol: {perplexity: 5E+0}\n")
    raw = read_config(config)
    assert raw["train"]["lr"] == "1e-4"  # YAML 1.1: no dot, so a string
    checked = validate_sections(raw, "mlesam", "tsne")
    assert checked["train"] == {"lr": 1e-4, "weight_decay": 0.01, "warmup_ratio": 0.5}
    assert checked["protocol"] == {"perplexity": 5.0}
    assert all(isinstance(v, float) for v in checked["train"].values())


def test_empty_train_modalities_are_refused(root: Path, work: Path):
    db = work / "r.sqlite"
    for command in ("run", "train"):
        extra = ["--results", db, "--steps", "1"] if command == "run" else ["--steps", "1"]
        result = invoke(command, "--data-root", root, "--train-modalities", "", *extra, *FAST)
        refused(result, 2, "--train-modalities", "'' names no modality", "rgb, depth")
        result = invoke(command, "--data-root", root, "--train-modalities", " , ", *extra, *FAST)
        refused(result, 2, "' , ' names no modality")
    assert not db.exists() and not (work / "runs").exists()


# --------------------------------------------------------------------------------------------
# 2. devices
# --------------------------------------------------------------------------------------------
def test_a_device_this_machine_lacks_is_refused_before_the_store_is_touched(root: Path, work: Path, monkeypatch):
    db = existing_store(work / "r.sqlite")
    before = snapshot(db)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    run = ["run", "--data-root", root, "--results", db, *FAST]
    refused(invoke(*run, "--device", "cuda"), 1, "--device cuda: CUDA is not available on this machine",
            "available: cpu")
    refused(invoke(*run, "--device", "mps"), 1, "--device mps: Apple's MPS backend is not available",
            "available: cpu")
    refused(invoke(*run, "--device", "gpu"), 1, "--device 'gpu' is not a device name", "available here: cpu")
    refused(invoke("train", "--data-root", root, "--device", "cuda", *FAST), 1, "--device cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    refused(invoke(*run, "--device", "cuda:5"), 1, "--device cuda:5: this machine has 1 CUDA device(s)",
            "available: cpu, cuda:0")
    assert unchanged(before) and ResultsStore(db).runs().empty
    assert not (work / "runs").exists()


# --------------------------------------------------------------------------------------------
# 3. output locations
# --------------------------------------------------------------------------------------------
def test_unwritable_output_locations_are_found_before_training(root: Path, work: Path, monkeypatch):
    db = work / "r.sqlite"
    blocker = work / "blocker"
    blocker.write_text("a regular file")
    run = ["run", "--data-root", root, "--steps", "1", *FAST]
    result = invoke(*run, "--results", db, "--save-checkpoint", blocker / "m.pt")
    refused(result, 1, f"--save-checkpoint {blocker / 'm.pt'} cannot be created: {blocker} is a file")
    assert "training mlesam" not in result.output
    refused(invoke(*run, "--results", blocker / "r.sqlite"), 1,
            f"--results {blocker / 'r.sqlite'} cannot be created: {blocker} is a file")
    refused(invoke("train", "--data-root", root, "--save-checkpoint", blocker / "sub" / "m.pt", *FAST), 1,
            "--save-checkpoint", "is a file, not a directory")
    # A read-only folder (root may write anywhere, so the permission answer is simulated there).
    locked = work / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real_access(p, mode, **kw))
    try:
        refused(invoke(*run, "--results", db, "--save-checkpoint", locked / "m.pt"), 1,
                f"--save-checkpoint {locked / 'm.pt'} cannot be written: no write permission in {locked}")
    finally:
        locked.chmod(0o755)
    # The runs/ folder (figures, default checkpoints) is blocked by a file.
    (work / "runs").write_text("not a folder")
    refused(invoke(*run, "--results", db), 1, f"the runs folder (checkpoints and figures) {work / 'runs'} "
            f"cannot be created: {work / 'runs'} is a file")
    assert not db.exists() and blocker.read_text() == "a regular file" and not any(locked.iterdir())


def test_a_checkpoint_never_replaces_the_store_an_input_or_a_data_file(root: Path, work: Path):
    db = existing_store(work / "results.sqlite")
    checkpoint = work / "trained.pt"
    checkpoint.write_bytes(b"PK\x03\x04 stands in for a checkpoint")
    data_file = deliver_file(root, "rgb", *_first_val(root))
    notes = work / "notes.txt"
    notes.write_text("my notes")
    before = snapshot(db, checkpoint, data_file, notes)
    run = ["run", "--data-root", root, "--steps", "1", *FAST]
    refused(invoke(*run, "--results", db, "--save-checkpoint", db), 1,
            f"--save-checkpoint {db} is the results store (--results); writing the checkpoint there would destroy it")
    refused(invoke(*run, "--results", db, "--checkpoint", checkpoint, "--save-checkpoint", checkpoint), 1,
            f"--save-checkpoint {checkpoint} is the --checkpoint being evaluated; writing there would destroy it")
    refused(invoke(*run, "--results", db, "--save-checkpoint", data_file), 1,
            f"--save-checkpoint {data_file} is inside the data set folder {root.resolve()}")
    # `train` has no --results: the file's contents give it away.
    refused(invoke("train", "--data-root", root, "--save-checkpoint", db, *FAST), 1,
            f"--save-checkpoint {db} is an SQLite database (a results store?); writing the checkpoint there "
            "would destroy it")
    refused(invoke("train", "--data-root", root, "--save-checkpoint", notes, *FAST), 1,
            f"--save-checkpoint {notes} exists and is not a checkpoint; refusing to overwrite it")
    assert unchanged(before) and ResultsStore(db).runs().empty


def _first_val(root: Path) -> tuple[str, str, str, str]:
    ref = load_dataset("synthetic", root, "val", ["rgb"]).refs[0]
    weather, scene, frame = ref.id.split("/")
    return weather, "val", scene, frame


# --------------------------------------------------------------------------------------------
# 4. the evaluation split, checked before training
# --------------------------------------------------------------------------------------------
_COPIED_FROM: dict[Path, Path] = {}


@pytest.fixture()
def broken_root(root: Path, tmp_path: Path) -> Path:
    copy = Path(shutil.copytree(root, tmp_path / "copy"))
    _COPIED_FROM[copy] = root
    return copy


def root_of(copy: Path) -> Path:
    return _COPIED_FROM[copy]


def test_a_broken_evaluation_file_is_found_before_training(broken_root: Path, work: Path):
    db, ckpt = work / "r.sqlite", work / "m.pt"
    where = _first_val(broken_root)
    rgb = deliver_file(broken_root, "rgb", *where)
    rgb.write_bytes(rgb.read_bytes()[: rgb.stat().st_size // 2])
    result = invoke("run", "--data-root", broken_root, "--steps", "1", "--results", db, "--save-checkpoint", ckpt,
                    *FAST)
    refused(result, 1, "evaluation split 'val' of synthetic", f"rgb file {rgb} is truncated (no PNG end marker)",
            "found before anything ran, nothing was written")
    assert "training mlesam" not in result.output and not db.exists() and not ckpt.exists()
    # A modality whose size is not its label's, where the layout says they match.
    shutil.copy(deliver_file(root_of(broken_root), "rgb", *where), rgb)
    depth = deliver_file(broken_root, "depth", *where)
    shutil.copy(_png(work / "small.png", 32), depth)
    label = deliver_file(broken_root, "label", *where)
    result = invoke("run", "--data-root", broken_root, "--steps", "1", "--results", db, *FAST)
    refused(result, 1, f"depth file {depth} is 32x32, but its label is 64x64")
    # An unreadable label header.
    label.write_bytes(b"not a png at all")
    result = invoke("run", "--data-root", broken_root, "--steps", "1", "--results", db, *FAST)
    refused(result, 1, f"label file {label} is not a readable image")
    assert not db.exists() and not (work / "runs").exists()


def _png(path: Path, size: int) -> Path:
    Image.fromarray(np.zeros((size, size, 3), dtype=np.uint8)).save(path)
    return path


def test_the_loader_decides_which_sizes_may_differ(broken_root: Path, tmp_path: Path):
    """DELIVER stores low-resolution event frames on purpose; the loader resizes them."""
    where = _first_val(broken_root)
    shutil.copy(_png(tmp_path / "small.png", 32), deliver_file(broken_root, "event", *where))
    check_eval_files(load_dataset("synthetic", broken_root, "val", ["rgb", "event"]))
    with pytest.raises(DataError, match="depth file .* is 32x32, but its label is 64x64"):
        shutil.copy(tmp_path / "small.png", deliver_file(broken_root, "depth", *where))
        check_eval_files(load_dataset("synthetic", broken_root, "val", ["rgb", "depth"]))


# --------------------------------------------------------------------------------------------
# 5. --resume
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("trained")
    config = folder / "c.yaml"
    config.write_text(SMALL_TRAINING)
    ckpt = folder / "m.pt"
    result = invoke("train", "--data-root", root, "--steps", "2", "--config", config, "--save-checkpoint", ckpt,
                    "--train-modalities", "rgb,depth", *FAST)
    assert result.exit_code == 0, result.output
    return ckpt, config


def test_resume_refuses_another_seed_configuration_or_fewer_steps(root: Path, work: Path, trained):
    ckpt, config = trained
    stored = read_checkpoint(ckpt)["extra"]["train_config"]
    assert stored["seed"] == 0 and stored["steps"] == 2 and stored["batch_size"] == 2
    before = snapshot(ckpt)
    train = ["train", "--data-root", root, "--save-checkpoint", ckpt, "--train-modalities", "rgb,depth", "--resume",
             *FAST]
    refused(invoke(*train, "--steps", "2", "--config", config, "--seed", "1"), 1,
            f"--resume: checkpoint {ckpt} was trained with another configuration: seed 0 (checkpoint) vs 1 (this run)",
            "without --resume")
    refused(invoke(*train, "--steps", "1", "--config", config), 1,
            f"--resume: checkpoint {ckpt} is at step 2, past this run's 1 steps; resume with --steps 2")
    other = work / "other.yaml"
    other.write_text(SMALL_TRAINING + "method: {top_k: 1}\n")
    refused(invoke(*train, "--steps", "2", "--config", other), 1, "method option top_k 2 (checkpoint) vs 1 (this run)")
    other.write_text("train: {batch_size: 2, crop_size: 64, base_size: 64, lr: 5.0e-4}\n")
    refused(invoke(*train, "--steps", "2", "--config", other), 1, "lr 0.001 (checkpoint) vs 0.0005 (this run)")
    # `run` checks before it opens the store.
    db = work / "r.sqlite"
    result = invoke("run", "--data-root", root, "--results", db, "--save-checkpoint", ckpt, "--resume", "--steps", "2",
                    "--config", config, "--seed", "3", "--train-modalities", "rgb,depth", *FAST)
    refused(result, 1, "seed 0 (checkpoint) vs 3 (this run)")
    assert not db.exists() and unchanged(before)
    # The same options resume (nothing left to do at step 2 of 2).
    assert invoke(*train, "--steps", "2", "--config", config).exit_code == 0
    assert unchanged(before)


def test_resume_needs_a_checkpoint_to_continue(root: Path, work: Path):
    db = work / "r.sqlite"
    run = ["run", "--data-root", root, "--results", db, "--steps", "1", "--resume", *FAST]
    refused(invoke(*run), 1, "--resume needs --save-checkpoint", "new for every run")
    refused(invoke(*run, "--save-checkpoint", work / "absent.pt"), 1,
            f"--resume: no checkpoint at {work / 'absent.pt'} to resume from")
    refused(invoke("train", "--data-root", root, "--steps", "1", "--resume", *FAST), 1,
            "--resume: no checkpoint at runs/mlesam-synthetic-rgb-depth-event-lidar-s0.pt to resume from")
    assert not db.exists() and not (work / "runs").exists()


# --------------------------------------------------------------------------------------------
# 6. a non-finite loss names only the checkpoint that exists
# --------------------------------------------------------------------------------------------
class _Probe(torch.nn.Module):
    """A stand-in method with what training and checkpoints need; its loss turns NaN at a call."""

    method_name, variant, preset, frozen_source = "probe", "probe", "tiny", "none"
    versioned_packages: tuple[str, ...] = ()

    def __init__(self, info, nan_from: int | None = None) -> None:
        super().__init__()
        self.info, self.modalities, self.nan_from, self.calls = info, ["rgb"], nan_from, 0
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, inputs):
        return None

    def loss(self, output, target):
        self.calls += 1
        value = (self.weight - 3.0) ** 2
        return value * float("nan") if self.nan_from is not None and self.calls >= self.nan_from else value

    def config_dict(self):
        return {}

    def trainable_state_dict(self):
        return {"weight": self.weight.detach().clone()}


def test_non_finite_loss_names_only_a_checkpoint_that_exists(root: Path, tmp_path: Path):
    ds = load_dataset("synthetic", root, "train", ["rgb"])
    config = TrainConfig(steps=6, batch_size=2, crop_size=32, log_every=1, checkpoint_every=2)
    ckpt = tmp_path / "m.pt"
    with pytest.raises(NonFiniteLoss) as caught:
        train(_Probe(ds.info, nan_from=1), ds, config, checkpoint=ckpt)
    assert str(caught.value) == "loss became nan at step 1; no checkpoint was written yet (try a lower learning rate)"
    assert not ckpt.exists()
    stale = tmp_path / "stale.pt"  # an older run's file at the (stable) path: not this run's
    stale.write_bytes(b"PK\x03\x04 older")
    with pytest.raises(NonFiniteLoss, match="no checkpoint was written yet"):
        train(_Probe(ds.info, nan_from=1), ds, config, checkpoint=stale)
    assert stale.read_bytes() == b"PK\x03\x04 older"
    with pytest.raises(NonFiniteLoss) as caught:
        train(_Probe(ds.info, nan_from=4), ds, config, checkpoint=ckpt)
    assert f"at step 4; the last good checkpoint is kept at {ckpt} (step 2)" in str(caught.value)
    assert read_checkpoint(ckpt)["extra"]["step"] == 2


# --------------------------------------------------------------------------------------------
# 7. output where CI reads it
# --------------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self, tick: float) -> None:
        self.now, self.tick = -tick, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_training_progress_lines_come_at_a_steady_pace(root: Path):
    ds = load_dataset("synthetic", root, "train", ["rgb"])
    lines: list[str] = []
    config = TrainConfig(steps=6, batch_size=2, crop_size=32, log_every=1)
    train(_Probe(ds.info), ds, config, report=lines.append, report_every=25, clock=FakeClock(10))
    # 10 s per step: a line at 30 s (step 3) and at 60 s (step 6), none in between.
    assert [line.split(",")[0] for line in lines] == ["train: step 3/6 (50%)", "train: step 6/6 (100%)"]
    assert lines[0].startswith("train: step 3/6 (50%), loss ")
    assert lines[0].endswith(", 0.2 samples/s, elapsed 30s, ETA 30s")
    assert lines[1].endswith(", 0.2 samples/s, elapsed 1m00s, ETA 0s")


def test_evaluation_progress_lines_count_batches_and_samples(root: Path):
    ds = load_dataset("synthetic", root, "val", ["rgb"])
    lines: list[str] = []
    counted = CountingDataset(ds, lines.append, passes=3, batch_size=1, every=15, clock=FakeClock(10))
    assert len(counted) == 2 and counted.info is ds.info and counted.refs is ds.refs
    for _ in range(3):
        for i in range(len(counted)):
            assert counted[i]["meta"]["id"] == ds.refs[i].id
    assert lines == [
        "eval: sample 2/6 (33%), batch 2/6 of pass 1/3, 0.1 samples/s, elapsed 20s, ETA 40s",
        "eval: sample 4/6 (67%), batch 4/6 of pass 2/3, 0.1 samples/s, elapsed 40s, ETA 20s",
        "eval: sample 6/6 (100%), batch 6/6 of pass 3/3, 0.1 samples/s, elapsed 1m00s, ETA 0s",
    ]


def test_a_run_writes_progress_lines_to_a_log_and_keeps_yaml_floats(root: Path, work: Path):
    config = work / "c.yaml"
    config.write_text("train: {batch_size: 2, crop_size: 64, base_size: 64, lr: 1e-4}\n")
    db = work / "r.sqlite"
    result = invoke("run", "--data-root", root, "--protocol", "full", "--train-modalities", "rgb", "--steps", "2",
                    "--config", config, "--results", db, "--progress-every", "0", *FAST)
    assert result.exit_code == 0, result.output
    assert "train: step 1/2 (50%)" in result.output and "train: step 2/2 (100%), loss " in result.output
    assert "eval: sample 2/2 (100%), batch 1/1" in result.output
    stored = ResultsStore(db).runs()["config"][0]["train"]
    assert stored["lr"] == 1e-4 and isinstance(stored["lr"], float)


def test_first_use_generation_says_what_it_does(work: Path, monkeypatch):
    import mlebench.data.synthetic as synthetic

    monkeypatch.setenv("MLEBENCH_CACHE_DIR", str(work / "cache"))

    def stop(*args, **kwargs):
        raise DataError("generation stopped by the test")

    monkeypatch.setattr(synthetic, "generate_synthetic", stop)
    db = work / "r.sqlite"
    # An unwritable output is found before the data set is generated (or read).
    blocker = work / "blocker"
    blocker.write_text("a regular file")
    result = invoke("run", "--results", db, "--steps", "1", "--save-checkpoint", blocker / "m.pt", *FAST)
    refused(result, 1, f"--save-checkpoint {blocker / 'm.pt'} cannot be created")
    assert "generating" not in result.output
    result = invoke("run", "--results", db, "--steps", "1", *FAST)
    refused(result, 1, "generation stopped by the test")
    announced = result.output.index(f"generating the synthetic data set in {work / 'cache'}")
    assert announced < result.output.index("generation stopped") and not db.exists()


def test_data_commands_take_data_root_and_the_old_root_alias_is_gone(root: Path, work: Path):
    result = invoke("data", "check", "--dataset", "synthetic", "--data-root", root, "--no-decode")
    assert result.exit_code == 0 and "layout OK" in result.output
    refused(invoke("data", "show", "--root", root, "-o", work / "a.png"), 2, "No such option '--root'")
    assert "--root" not in invoke("data", "check", "--help").output.replace("--data-root", "")
    assert not (work / "a.png").exists()
