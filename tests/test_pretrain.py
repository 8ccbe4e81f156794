"""The tiny presets' stand-in backbones (``mlebench pretrain --method NAME``), found through the
registry: one shared recipe, deterministic, written in the format each method's weights option
reads, shipped with a record whose checksum and recipe match the file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mlebench.registry import build_method, method_names
from mlebench.registry import method_entry
from mlebench.weights import sha256
from mlebench.cli import main
from mlebench.data import dataset_info
from mlebench.data.synthetic import generate_synthetic
from mlebench.errors import ConfigError
from mlebench.pretrain import PretrainRecipe, pretrain_stand_in, sidecar_path

INFO = dataset_info("synthetic")


def _stand_in(name: str):
    return method_entry(name).stand_in


WITH_STAND_IN = [m for m in method_names() if _stand_in(m) is not None]
#: one method per stand-in (methods sharing a backbone share its file)
BY_STAND_IN = {_stand_in(m).name: m for m in reversed(WITH_STAND_IN)}
QUICK = PretrainRecipe(steps=2, batch_size=2, threads=1)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("pre"), size=64, n_train=4, n_val=1, n_test=1, seed=9, workers=1)


def test_every_paper_method_has_a_stand_in():
    assert {"mlesam", "sam-lora", "cwsam", "cmnext"} <= set(WITH_STAND_IN)
    assert set(BY_STAND_IN) == {"sam2-hiera-tiny", "sam-vit-tiny", "mit-b0-tiny"}
    assert _stand_in("cwsam") == _stand_in("sam-lora")  # one stand-in per backbone
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        _stand_in("nope")


@pytest.mark.parametrize("method", sorted(BY_STAND_IN.values()))
def test_pretrain_is_deterministic_and_loads_through_every_sharing_method(method: str, tmp_path: Path,
                                                                          tiny_root: Path):
    records = [pretrain_stand_in(method, tmp_path / name, recipe, data_root=tiny_root)
               for name, recipe in (("a.pt", QUICK), ("b.pt", QUICK), ("c.pt", dataclasses.replace(QUICK, seed=1)))]
    states = [torch.load(tmp_path / n, weights_only=True)["model"] for n in ("a.pt", "b.pt", "c.pt")]
    a, b, c = states
    assert a.keys() == b.keys() == c.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same seed: same bits
    assert not all(torch.equal(a[k], c[k]) for k in a)  # another seed: other weights
    record = json.loads(sidecar_path(tmp_path / "a.pt").read_text())
    assert record["sha256"] == sha256(tmp_path / "a.pt") == records[0]["sha256"]
    assert record["recipe"] == dataclasses.asdict(QUICK) and record["trained_by"] == _stand_in(method).trained_by
    assert record["command"] == (f"mlebench pretrain --method {method} --steps 2 --batch-size 2 --lr 0.001 "
                                 "--seed 0 --n-images 600 --threads 1")
    assert len(records[0]["losses"]) == 1 and record["final_loss"] == records[0]["losses"][-1]
    for sharing in [m for m in WITH_STAND_IN if _stand_in(m) == _stand_in(method)]:
        loaded = build_method(sharing, INFO, ["rgb", "depth"], "tiny", **{method_entry(sharing).weights_option: str(tmp_path / "a.pt")})
        assert loaded.frozen_source.endswith(":" + record["sha256"][:16]), sharing
        fresh = build_method(sharing, INFO, ["rgb", "depth"], "tiny", **{method_entry(sharing).weights_option: None})
        own, start = loaded.state_dict(), fresh.state_dict()
        # The stand-in's own tensors (the backbone above all) were trained, and they arrive.
        # (a file's key names may be relative to a sub-module: MiT's ``block1...`` is ``backbone.block1...``)
        found = {k: [o for o in own if o == k or o.endswith("." + k)] for k in a}
        target = {k: o[0] for k, o in found.items() if o and own[o[0]].shape == a[k].shape}
        moved = [k for k, o in target.items() if not torch.equal(own[o], start[o])]
        assert len(target) > 0.5 * len(a) and len(moved) > 0.5 * len(target), (
            f"{sharing}: {len(moved)} of {len(target)} stand-in tensors came trained")


@pytest.mark.parametrize("name", sorted(BY_STAND_IN))
def test_shipped_stand_in_matches_its_record_and_the_shared_recipe(name: str):
    stand_in = _stand_in(BY_STAND_IN[name])
    assert stand_in.path.is_file(), f"{stand_in.path} is missing: run `mlebench pretrain --method {BY_STAND_IN[name]}`"
    record = json.loads(sidecar_path(stand_in.path).read_text())
    assert record["sha256"] == sha256(stand_in.path)
    assert record["bytes"] == stand_in.path.stat().st_size < 20e6
    assert record["recipe"] == dataclasses.asdict(PretrainRecipe())  # every stand-in: the same budget
    assert record["stand_in"] == name and record["trained_by"] == stand_in.trained_by
    embedded = torch.load(stand_in.path, weights_only=True)["mlebench_pretrain"]
    assert embedded["command"] == record["command"] and embedded["final_loss"] == record["final_loss"]


@pytest.mark.parametrize("method", WITH_STAND_IN)
def test_the_tiny_preset_loads_its_stand_in_by_default(method: str):
    stand_in = _stand_in(method)
    model = build_method(method, INFO, ["rgb", "depth"], "tiny")
    assert model.frozen_source.endswith(":" + sha256(stand_in.path)[:16])


def test_pretrain_cli(tmp_path: Path, tiny_root: Path, monkeypatch):
    import mlebench.pretrain as pretrain_module

    original = pretrain_module.pretrain_stand_in
    monkeypatch.setattr(pretrain_module, "pretrain_stand_in",
                        lambda *a, **k: original(*a, **{**k, "data_root": tiny_root}))
    runner = CliRunner()
    out = tmp_path / "vit.pt"
    result = runner.invoke(main, ["pretrain", "--method", "cwsam", "--steps", "1", "--batch-size", "2",
                                  "--threads", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (sam-vit-tiny, trained through sam-lora;" in result.output
    assert json.loads(sidecar_path(out).read_text())["command"].startswith("mlebench pretrain --method cwsam --steps 1")
    result = runner.invoke(main, ["pretrain", "--method", "nope"])
    assert result.exit_code == 2 and "'nope' is not one of" in result.output
    result = runner.invoke(main, ["pretrain", "--method", "cmnext", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "is a directory" in result.output
    # Outputs that would destroy another command's files are refused before any training.
    store = tmp_path / "results.sqlite"
    assert runner.invoke(main, ["run", "--help"]).exit_code == 0
    from mlebench.results import ResultsStore

    ResultsStore(store)  # a real results file
    before = store.read_bytes()
    result = runner.invoke(main, ["pretrain", "--method", "cmnext", "--out", str(store)])
    assert result.exit_code == 1 and f"--out {store} is" in result.output and store.read_bytes() == before
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    result = runner.invoke(main, ["pretrain", "--method", "cmnext", "--out", str(tmp_path / "notes.pt")])
    assert result.exit_code == 1 and f"{notes} exists and is not a stand-in record" in result.output
    assert notes.read_text() == '{"mine": 1}' and not (tmp_path / "notes.pt").exists()
    result = runner.invoke(main, ["pretrain", "--method", "cmnext", "--out", str(tmp_path / "w.json")])
    assert result.exit_code == 1 and "another suffix than .json" in result.output


def test_pretrain_replaces_a_stand_in_but_another_checkpoint_only_with_force(tmp_path: Path):
    """A trained run's checkpoint is not a stand-in (it has no record beside it): ``--out`` on it
    is refused, and ``--force`` says to replace it; a stand-in with its record is replaced."""
    from mlebench.errors import OutputError
    from mlebench.pretrain import check_output

    trained = tmp_path / "trained.pt"
    torch.save({"format": 1, "state_dict": {"w": torch.ones(2)}}, trained)
    with pytest.raises(OutputError, match=f"--out {trained} is a PyTorch file .*would destroy it; add --force"):
        check_output(trained)
    check_output(trained, force=True)
    stand_in = tmp_path / "made.pt"
    torch.save({"model": {"w": torch.ones(2)}}, stand_in)
    sidecar_path(stand_in).write_text(json.dumps({"stand_in": "sam2-hiera-tiny"}))
    check_output(stand_in)  # its own rule: an earlier stand-in with its record
    result = CliRunner().invoke(main, ["pretrain", "--method", "mlesam", "--out", str(trained)])
    assert result.exit_code == 1 and "add --force to replace it" in result.output
    assert torch.load(trained, weights_only=True)["format"] == 1
