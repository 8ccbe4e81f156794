"""Method plugins from the command line: the example package (examples/late-fusion), installed
with pip and found through its ``mlebench.methods`` entry point, trains; loaded as a plugin it
runs under every protocol, passes the conformance checks, is gated and reported, with nothing in
this repository edited; ``--plugin`` and ``MLEBENCH_PLUGINS`` load a module that is not
installed; a broken or name-stealing plugin is refused whole, in one line that names it, and
every built-in method keeps working.

What depends on how a process starts (entry points, ``--plugin``, ``MLEBENCH_PLUGINS``, refused
plugins) runs in a fresh process (``python -m mlebench``), as a user's command would; the rest
runs in this one, with the plugin loaded as ``--plugin`` loads it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner, Result

from mlebench import conformance, registry
from mlebench.cli import main
from mlebench.data.synthetic import generate_synthetic
from mlebench.results.store import open_store_for_reading

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "late-fusion"
BUILTIN = {"mlesam", "mlesam-noaux", "sam-lora", "cwsam", "cmnext"}


def mlebench(*args: str, cwd: Path, path: Path | None = None, env: dict[str, str] | None = None,
             timeout: int = 600) -> subprocess.CompletedProcess:
    environ = {**os.environ, **(env or {})}
    if path is not None:
        environ["PYTHONPATH"] = str(path)
    return subprocess.run([sys.executable, "-m", "mlebench", *map(str, args)], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=timeout)


def listed(result: subprocess.CompletedProcess) -> set[str]:
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("data"), size=64, n_train=8, n_val=4, n_test=1, seed=5,
                              workers=1)


@pytest.fixture(scope="module")
def plugin() -> Iterator[None]:
    """The example plugin loaded into this process (as ``--plugin`` loads it), for the commands run
    in-process; taken out of the registry again afterwards, so that the other tests (the gate's
    list of methods) see only the built-in methods."""
    sys.path.insert(0, str(EXAMPLE))
    registry.load_plugins()
    state = registry._REGISTRY
    saved = (dict(state.methods), list(state.commands), state.default)
    registry.load_plugin("mlebench_late_fusion")
    try:
        yield
    finally:
        state.methods, state.commands, state.default = saved
        sys.modules.pop("mlebench_late_fusion", None)
        sys.path.remove(str(EXAMPLE))


def test_the_installed_example_is_found_through_its_entry_point(tmp_path_factory: pytest.TempPathFactory,
                                                               data_root: Path):
    """pip installs the package into a folder of its own (the suite's environment, and the gate's
    list of methods, stay as they are); a fresh process finds it and trains it."""
    source = tmp_path_factory.mktemp("src") / "late-fusion"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(source)], check=True, capture_output=True, text=True)
    assert (site / "mlebench_late_fusion").is_dir() and not (site / "mlebench").exists()
    work = tmp_path_factory.mktemp("work")
    assert {"late-fusion"} | BUILTIN <= listed(mlebench("methods", cwd=work, path=site))
    run = mlebench("run", "--method", "late-fusion", "--protocol", "full", "--data-root", data_root, "--steps", "2",
                   "--results", work / "r.sqlite", cwd=work, path=site)
    assert run.returncode == 0, run.stderr
    assert "training late-fusion (small) on synthetic rgb-depth-event-lidar for 2 steps" in run.stdout


def _miou(db: Path, protocol: str, modalities: str) -> float:
    frame = open_store_for_reading(db).results()
    rows = frame[(frame.method == "late-fusion") & (frame.protocol == protocol) & (frame.metric == "miou")
                 & (frame["class"] == "") & (frame.test_modalities == modalities) & (frame.condition == "all")
                 & (frame.corruption == "none")]
    assert len(rows) == 1, rows
    return float(rows.value.iloc[0])


def test_the_plugin_runs_under_every_protocol_and_is_reported(plugin: None, data_root: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    db, ckpt = tmp_path / "lab.sqlite", tmp_path / "lf.pt"
    common = ["--method", "late-fusion", "--data-root", data_root, "--results", db]
    run = invoke("run", *common, "--steps", "30", "--save-checkpoint", ckpt)
    assert run.exit_code == 0, run.output
    for protocol in ("full", "noise", "conditions", "tsne"):
        result = invoke("eval", *common, "--checkpoint", ckpt, "--protocol", protocol)
        assert result.exit_code == 0, (protocol, result.output)
    # One checkpoint, two protocols, two paths through the evaluator: the same number.
    assert _miou(db, "full", "rgb,depth,event,lidar") == _miou(db, "missing-modality", "rgb,depth,event,lidar")
    runs = invoke("results", "list", "--results", db)
    assert runs.exit_code == 0 and runs.output.count("late-fusion") == 5
    report = invoke("report", "--results", db, "--format", "markdown", "--reference", "late-fusion")
    assert report.exit_code == 0, report.output
    sections = {part.split("\n", 1)[0]: part for part in report.output.split("### ")[1:]}
    for table in ("Tab. I-III", "Tab. IV", "Tab. V", "Tab. VI-VII", "Tab. VIII", "Fig. 6"):
        section = next(body for title, body in sections.items() if f"(as the paper's {table})" in title)
        assert "| late-fusion" in section, table
    same = next(body for title, body in sections.items() if "Tab. I-III" in title)
    cell = next(line for line in same.splitlines() if line.startswith("| late-fusion |")).split("|")[2]
    assert float(cell) == round(100 * _miou(db, "full", "rgb,depth,event,lidar"), 2) > 0


def test_the_plugins_presets_options_and_weights_come_from_the_registry(plugin: None, data_root: Path,
                                                                         tmp_path: Path):
    common = ["run", "--method", "late-fusion", "--data-root", data_root, "--results", tmp_path / "r.sqlite",
              "--steps", "1"]
    cases = [
        (["--preset", "tiny"], "--preset 'tiny': method late-fusion has no such preset; known: small, large"),
        (["-o", "width=wide"], "method.width = 'wide'"),
        (["--weights", tmp_path / "w.pt"], "--weights: method late-fusion takes no weights file"),
    ]
    for extra, message in cases:
        result = invoke(*common, *extra)
        assert result.exit_code == 1 and message in result.output, (extra, result.output)
    assert not (tmp_path / "r.sqlite").exists()
    report = json.loads(invoke("params", "--method", "late-fusion", "--json").output)
    assert report["preset"] == "large" and set(report["parts"]) == {"encoders", "heads"}  # the last: full size


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda c: c.__name__)
def test_the_plugin_passes_the_conformance_checks(plugin: None, check):
    check("late-fusion")


def test_the_plugin_is_gated_once_its_baseline_is_added(plugin: None, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    baseline = tmp_path / "late-fusion-baseline.json"
    missing = invoke("check", "--methods", "late-fusion", "--baseline", baseline)
    assert missing.exit_code == 1 and "check --update" in missing.output
    update = invoke("check", "--update", "--methods", "late-fusion", "--seeds", "1,2", "--baseline", baseline)
    assert update.exit_code == 0, update.output
    cases = json.loads(baseline.read_text())["cases"]
    assert {c["method"] for c in cases} == {"late-fusion"} and len(cases) == 15 + 4 + 1  # subsets, summaries, full
    gate = invoke("check", "--methods", "late-fusion", "--baseline", baseline)  # seed 0: new to the baseline
    assert gate.exit_code == 0 and "passed: 2 gated figures" in gate.output, gate.output
    assert f"; {len(cases)} cases compared, 0 gone" in gate.output


def test_a_module_that_is_not_installed_loads_with_plugin_or_the_environment(tmp_path: Path):
    (tmp_path / "other_plugin.py").write_text(  # listed, never built
        "from mlebench.registry import register_method\n\n"
        "@register_method('other-method')\ndef build(info, modalities, preset):\n    raise RuntimeError\n")
    both = mlebench("--plugin", "other_plugin", "methods", cwd=tmp_path, path=Path(f"{EXAMPLE}{os.pathsep}{tmp_path}"),
                    env={"MLEBENCH_PLUGINS": "mlebench_late_fusion"})
    assert {"late-fusion", "other-method"} | BUILTIN <= listed(both)
    missing = mlebench("--plugin", "no_such_plugin_module", "methods", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == ("Error: plugin 'no_such_plugin_module' not loaded: ModuleNotFoundError: "
                                      "No module named 'no_such_plugin_module'")


@pytest.fixture
def bad_plugins(tmp_path: Path) -> Path:
    """An installed distribution with two bad entry points: one whose module does not exist, one
    that registers a method of its own and then tries to take ``mlesam``."""
    site = tmp_path / "site"
    info = site / "bad_plugins-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mlebench.methods]\nbroken = no_such_module_xyz\n"
                                           "thief = thief_plugin\n")
    (site / "thief_plugin.py").write_text(
        "from mlebench.registry import register_method\n\n"
        "@register_method('thief-extra')\ndef extra(info, modalities, preset):\n    raise RuntimeError\n\n"
        "@register_method('mlesam')\ndef steal(info, modalities, preset):\n    raise RuntimeError\n")
    return site


def test_a_broken_or_name_stealing_plugin_is_refused_whole_and_the_builtins_keep_working(bad_plugins: Path,
                                                                                         tmp_path: Path):
    result = mlebench("methods", cwd=tmp_path, path=bad_plugins)
    names = listed(result)
    assert BUILTIN <= names and "thief-extra" not in names  # refused whole: nothing of it stays
    assert "late-fusion" not in names  # a plugin that is not installed is not there
    errors = result.stderr.strip().splitlines()
    assert errors == [
        "Error: plugin 'broken' not loaded: ModuleNotFoundError: No module named 'no_such_module_xyz' "
        "(entry point mlebench.methods: broken = no_such_module_xyz)",
        "Error: plugin 'thief' not loaded: method 'mlesam' is already registered by plugin 'mlesam' "
        "(entry point mlebench.methods: thief = thief_plugin)",
    ]
    params = mlebench("params", "--method", "mlesam", "--preset", "tiny", "--json", cwd=tmp_path, path=bad_plugins)
    assert params.returncode == 0 and json.loads(params.stdout)["method"] == "mlesam"
    assert params.stderr.count("Error: plugin") == 2  # said once per command, not per lookup
