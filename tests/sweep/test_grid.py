"""A sweep's grid: files and options parsed into cells with one clear line per mistake,
``all-subsets`` expanded, cells turned into the job's own command line, and a cell's identity:
the same configuration gives the same id wherever its results go, other data or another option
another id."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mlebench.cli.jobs import eval_cmd, run, spec_from_options
from mlebench.errors import ConfigError
from mlebench.sweep.grid import cell_argv, expand, grid_from_options, identify, read_grid

from ..helpers import invoke


def _grid_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def test_a_grid_file_expands_to_every_combination_and_all_subsets(tmp_path: Path):
    grid = read_grid(_grid_file(tmp_path, """
grid:
  method: [mlesam, cmnext]
  train_modalities: all-subsets
set:
  protocol: full
  steps: 2
  options: {top_k: 1}
slurm: {partition: gpu, gpus_per_node: 1}
"""))
    cells = expand(grid)
    assert len(cells) == 2 * 15 and grid.name == "grid" and grid.slurm == {"partition": "gpu", "gpus_per_node": 1}
    assert [c["train_modalities"] for c in cells[:5]] == ["rgb", "depth", "event", "lidar", "rgb,depth"]
    assert cells[-1] == {"method": "cmnext", "train_modalities": "rgb,depth,event,lidar", "protocol": "full",
                         "steps": 2, "options": {"top_k": 1}}
    assert cell_argv(run, "run", cells[0]) == ["run", "--method", "mlesam", "--train-modalities", "rgb",
                                               "--protocol", "full", "--steps", "2", "-o", "top_k=1"]


def test_options_make_the_same_grid_as_a_file(tmp_path: Path):
    from_file = read_grid(_grid_file(tmp_path, "grid: {seed: [0, 1]}\nset: {protocol: full, no_feature_cache: true}\n"))
    from_options = grid_from_options(["seed=0,1"], ["protocol=full", "no-feature-cache=true"])
    assert expand(from_file) == expand(from_options) == [
        {"seed": 0, "protocol": "full", "no_feature_cache": True}, {"seed": 1, "protocol": "full",
                                                                   "no_feature_cache": True}]
    assert cell_argv(run, "run", expand(from_file)[0]) == ["run", "--seed", "0", "--protocol", "full",
                                                           "--no-feature-cache"]


@pytest.mark.parametrize("text, message", [
    ("grid: [1, 2]\n", "grid: must be a mapping of key: value"),
    ("grids: {seed: [0]}\n", "unknown key(s) grids"),
    ("grid: {seed: [0]}\nset: {seed: 1}\n", "seed both swept (grid) and fixed (set); give it once"),
    ("grid: {seeds: [0, 1]}\n", "seeds cannot be set per cell: sweep seeds with the seed key"),
    ("set: {results: r.sqlite}\n", "results cannot be set per cell"),
    ("job: train\n", "job: 'train'; choose run or eval"),
    ("grid: {seed: []}\n", "grid key seed has no values"),
    ("grid: {seed: [0\n", "is not YAML"),
])
def test_a_bad_grid_file_is_one_line_naming_it(tmp_path: Path, text: str, message: str):
    path = _grid_file(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_grid(path)
    result = invoke("sweep", str(path), "--dry-run")
    assert result.exit_code == 1 and message in result.output and str(path) in result.output
    assert result.output.count("\n") == 1


def test_unknown_options_and_values_are_named():
    with pytest.raises(ConfigError, match=r"learning_rate: not an option of `mlebench run`; known: .*steps"):
        cell_argv(run, "run", {"learning_rate": 1})
    with pytest.raises(ConfigError, match=r"amp: 'yes'; give true or false"):
        cell_argv(run, "run", {"amp": "yes"})
    with pytest.raises(ConfigError, match=r"--grid 'seed': give KEY=VALUE,VALUE"):
        grid_from_options(["seed"], [])
    result = invoke("sweep", "--grid", "method=mlesam,nosuch", "--dry-run")
    assert result.exit_code == 1 and "cell method=nosuch: Invalid value for '--method': 'nosuch'" in result.output


def test_a_cell_is_identified_by_its_whole_configuration(sweep_data: Path, tmp_path: Path):
    cache: dict = {}

    def cell(**options):
        return identify(run, spec_from_options, "run", {"protocol": "full", "data_root": str(sweep_data), **options},
                        cache)

    base = cell(seed=0)
    assert cell(seed=0).cell_id == base.cell_id  # deterministic
    assert cell(seed=0, num_workers=0).cell_id == base.cell_id  # changes no number
    assert cell(seed=0, preset="tiny").cell_id == base.cell_id  # the default, given explicitly
    others = [cell(seed=1), cell(seed=0, steps=3), cell(seed=0, train_modalities="rgb"),
              cell(seed=0, options={"top_k": 1}), cell(seed=0, split="test")]
    assert len({base.cell_id, *(c.cell_id for c in others)}) == 6
    assert base.identity["data"]["fingerprint"] and base.identity["spec"]["preset"] == "tiny"
    # Other data in a copy of the same folder: another identity, another cell.
    copy = shutil.copytree(sweep_data, tmp_path / "copy")
    moved = identify(run, spec_from_options, "run", {"protocol": "full", "data_root": str(copy), "seed": 0}, cache)
    assert moved.identity["data"]["fingerprint"] == base.identity["data"]["fingerprint"]
    label = next(p for p in sorted(copy.rglob("*_rgb_front.png")) if "/val/" in p.as_posix())
    label.write_bytes(label.read_bytes() + b"\0")
    changed = identify(run, spec_from_options, "run", {"protocol": "full", "data_root": str(copy), "seed": 0}, {})
    assert changed.identity["data"]["fingerprint"] != base.identity["data"]["fingerprint"]
    assert len({base.cell_id, moved.cell_id, changed.cell_id}) == 3  # the root is part of the data's identity
    # An eval cell names its checkpoint; a run option it lacks is named.
    with pytest.raises(ConfigError, match="steps: not an option of `mlebench eval`"):
        cell_argv(eval_cmd, "eval", {"steps": 2})


def test_the_same_cell_twice_is_refused(sweep_data: Path):
    result = invoke("sweep", "--grid", "seed=0,0", "--set", f"data_root={sweep_data}", "--dry-run")
    assert result.exit_code == 1 and "are the same run; sweep the seed or another option" in result.output


def test_the_example_report_is_the_sweep_of_the_commands_it_used_to_run():
    """reports/example/sweep.yaml runs exactly the jobs `make example-report` ran by hand: one
    `run` per method keeping its checkpoint, then the evaluations of those checkpoints."""
    from ..helpers import REPO_ROOT

    result = invoke("sweep", str(REPO_ROOT / "reports/example/sweep.yaml"), "--executor", "local", "--dry-run",
                    "--results", "runs/example/results.sqlite")
    assert result.exit_code == 0, result.output
    commands = [line.split("] mlebench ", 1)[1] for line in result.output.splitlines() if "would submit" in line]
    runs = [f"run --method {m} --save-checkpoint runs/example/{m}.pt"
            for m in ("mlesam", "mlesam-noaux", "sam-lora", "cwsam", "cmnext")]
    evals = [f"eval --method {m} --protocol {p} --checkpoint runs/example/{m}.pt"
             for m in ("mlesam", "mlesam-noaux") for p in ("full", "conditions", "tsne")]
    evals += [f"eval --method {m} --protocol noise --config reports/example/noise.yaml --checkpoint "
              f"runs/example/{m}.pt" for m in ("mlesam", "mlesam-noaux")]
    evals += [f"eval --method {m} --protocol full --checkpoint runs/example/{m}.pt" for m in ("sam-lora", "cwsam",
                                                                                          "cmnext")]
    assert commands == runs + evals
    assert "stage 1 of 2: 5 run cell(s)" in result.output and "5 of 5 cell(s) would be submitted to local, 1 at a " \
        "time" in result.output
