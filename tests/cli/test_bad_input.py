"""The reliability sweep of `mlebench run / train / eval / data`: every mistake a new user made
ends in one clear line that names the file, option or value, a non-zero exit, and nothing lost
(no results row, no clobbered file, no half-written output): config mistakes, devices, output
locations, a broken evaluation file, refused resumes, the first-use generation message and
--data-root."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from mlebench.config import read_config, validate_sections
from mlebench.engine.checkpoint import read_checkpoint
from mlebench.errors import DataError
from mlebench.results import ResultsStore

from ..helpers import FAST, deliver_path, first_val, invoke, png, root_of

SMALL_TRAINING = "train: {batch_size: 2, crop_size: 64, base_size: 64}\n"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """In-process model runs on one torch thread."""


@pytest.fixture(scope="module")
def root(small_synthetic: Path) -> Path:
    """The small synthetic set (tests/conftest.py)."""
    return small_synthetic


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
    # Read-only and full file systems are real mounts: cli/test_outputs.py. The runs/ folder
    # (figures, default checkpoints) blocked by a file:
    (work / "runs").write_text("not a folder")
    refused(invoke(*run, "--results", db), 1, "the runs folder (checkpoints and figures) runs "
            "cannot be created: runs is a file")
    assert not db.exists() and blocker.read_text() == "a regular file"


def test_a_checkpoint_never_replaces_the_store_an_input_or_a_data_file(root: Path, work: Path):
    db = existing_store(work / "results.sqlite")
    checkpoint = work / "trained.pt"
    checkpoint.write_bytes(b"PK\x03\x04 stands in for a checkpoint")
    data_file = deliver_path(root, "rgb", *first_val(root))
    notes = work / "notes.txt"
    notes.write_text("my notes")
    before = snapshot(db, checkpoint, data_file, notes)
    run = ["run", "--data-root", root, "--steps", "1", *FAST]
    refused(invoke(*run, "--results", db, "--save-checkpoint", db), 1,
            f"--save-checkpoint {db} is the results store (--results); writing the checkpoint there would destroy it")
    evaluate = ["run", "--data-root", root, *FAST]  # nothing is trained: no --steps
    refused(invoke(*evaluate, "--results", db, "--checkpoint", checkpoint, "--save-checkpoint", checkpoint), 1,
            f"--save-checkpoint {checkpoint} is the --checkpoint being evaluated; writing there would destroy it")
    refused(invoke(*run, "--results", db, "--save-checkpoint", data_file), 1,
            f"--save-checkpoint {data_file} is inside the data set folder {root.resolve()}")
    # `train` has no --results: the file's contents give it away.
    refused(invoke("train", "--data-root", root, "--save-checkpoint", db, *FAST), 1,
            f"--save-checkpoint {db} is an SQLite database (a results store); writing the checkpoint there "
            "would destroy it")
    refused(invoke("train", "--data-root", root, "--save-checkpoint", notes, *FAST), 1,
            f"--save-checkpoint {notes} is a text file; writing the checkpoint there would destroy it")
    assert unchanged(before) and ResultsStore(db).runs().empty


# --------------------------------------------------------------------------------------------
# 4. the evaluation split, checked before training (broken_root: tests/conftest.py)
# --------------------------------------------------------------------------------------------
def test_a_broken_evaluation_file_is_found_before_training(broken_root: Path, work: Path):
    db, ckpt = work / "r.sqlite", work / "m.pt"
    where = first_val(broken_root)
    rgb = deliver_path(broken_root, "rgb", *where)
    rgb.write_bytes(rgb.read_bytes()[: rgb.stat().st_size // 2])
    result = invoke("run", "--data-root", broken_root, "--steps", "1", "--results", db, "--save-checkpoint", ckpt,
                    *FAST)
    refused(result, 1, "evaluation split 'val' of synthetic", f"rgb file {rgb} is truncated (no PNG end marker)",
            "found before anything ran, nothing was written")
    assert "training mlesam" not in result.output and not db.exists() and not ckpt.exists()
    # A modality whose size is not its label's, where the layout says they match.
    shutil.copy(deliver_path(root_of(broken_root), "rgb", *where), rgb)
    depth = deliver_path(broken_root, "depth", *where)
    shutil.copy(png(work / "small.png", 32), depth)
    label = deliver_path(broken_root, "label", *where)
    result = invoke("run", "--data-root", broken_root, "--steps", "1", "--results", db, *FAST)
    refused(result, 1, f"depth file {depth} is 32x32, but its label is 64x64")
    # An unreadable label header.
    label.write_bytes(b"not a png at all")
    result = invoke("run", "--data-root", broken_root, "--steps", "1", "--results", db, *FAST)
    refused(result, 1, f"label file {label} is not a readable image")
    assert not db.exists() and not (work / "runs").exists()


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
# 6. the data set: generated on first use, named by --data-root
# --------------------------------------------------------------------------------------------
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
