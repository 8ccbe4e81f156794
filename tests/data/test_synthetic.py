"""The synthetic generator: determinism, the DELIVER layout, weathers, failures, the cache."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlebench.data import dataset_info, load_dataset
from mlebench.data import synthetic as syn
from mlebench.data import synthetic_render as render
from mlebench.data.deliver import (
    DELIVER_INFO,
    SENSOR_FAILURES,
    WEATHERS,
)
from mlebench.errors import DataError

from ..helpers import deliver_path

SIZE = 64
SMALL = dict(size=SIZE, n_train=20, n_val=5, n_test=5, seed=0)
ALL = ["rgb", "depth", "depth_raw", "event", "lidar"]
ROAD, ROADLINE = render.ROAD, render.ROADLINE


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return syn.generate_synthetic(tmp_path_factory.mktemp("syn") / "set", **SMALL, workers=1)


def test_info_is_deliver_with_present_miou():
    info = dataset_info("synthetic")
    assert info is syn.SYNTHETIC_INFO
    assert info.classes == DELIVER_INFO.classes and info.palette == DELIVER_INFO.palette
    assert info.miou_convention == "present"
    assert info.defaults == ("rgb", "depth", "event", "lidar")
    assert info.notes
    assert set(syn.SYNTHETIC_CLASS_IDS) < set(range(info.num_classes))


def test_layout_and_manifest(small_set: Path):
    manifest = json.loads((small_set / "synthetic.json").read_text())
    assert manifest["version"] == syn.GENERATOR_VERSION
    assert manifest["params"] == SMALL
    plan = syn.plan_split("train", SMALL["n_train"], 0)[3]
    where = (plan.weather, "train", plan.scene, plan.frame)
    for modality in ("rgb", "depth", "depth_raw", "event", "lidar", "label"):
        assert deliver_path(small_set, modality, *where).is_file()
    # hha/ and depth/ both carry the _depth suffix.
    hha = small_set / "hha" / plan.weather / "train" / plan.scene / f"{plan.frame}_depth_front.png"
    assert hha.is_file()
    with Image.open(deliver_path(small_set, "depth_raw", *where)) as img:
        assert img.mode.startswith("I;16")
    fractions = manifest["class_pixel_fraction"]
    # Recounted from the written label files (R channel = class id + 1).
    counts = np.zeros(DELIVER_INFO.num_classes, dtype=np.int64)
    for path in (small_set / "semantic").rglob("*.png"):
        with Image.open(path) as img:
            counts += np.bincount(np.asarray(img)[..., 0].ravel() - 1, minlength=len(counts))
    assert counts.sum() == SIZE * SIZE * (SMALL["n_train"] + SMALL["n_val"] + SMALL["n_test"])
    assert set(np.nonzero(counts)[0]) <= set(syn.SYNTHETIC_CLASS_IDS)
    assert list(fractions) == sorted(DELIVER_INFO.classes[c] for c in syn.SYNTHETIC_CLASS_IDS)
    for c in syn.SYNTHETIC_CLASS_IDS:
        assert fractions[DELIVER_INFO.classes[c]] == pytest.approx(counts[c] / counts.sum(), abs=1e-6)
    assert max(fractions.values()) < 0.6  # no class swamps the set
    assert manifest["splits"]["train"]["samples"] == SMALL["n_train"]
    weathers = [p.weather for p in syn.plan_split("train", SMALL["n_train"], 0)]
    assert manifest["splits"]["train"]["weather"] == {w: weathers.count(w) for w in set(weathers)}


def test_deterministic_and_independent_of_workers(tmp_path: Path, small_set: Path):
    params = dict(size=32, n_train=4, n_val=2, n_test=2, seed=3)
    one = _files(syn.generate_synthetic(tmp_path / "one", **params, workers=1))
    two = _files(syn.generate_synthetic(tmp_path / "two", **params, workers=2))
    assert one.keys() == two.keys() and len(one) == 8 * 6 + 1
    assert all(one[k] == two[k] for k in one)
    other = _files(syn.generate_synthetic(tmp_path / "other", **{**params, "seed": 4}, workers=1))
    rgb = [k for k in one if k.startswith("img/")]
    assert any(one.get(k) != other.get(k) for k in rgb)


def test_render_is_a_pure_function_of_the_key():
    a = render.render_sample((1, 0, 5), "sun", "none", 48)
    b = render.render_sample((1, 0, 5), "sun", "none", 48)
    c = render.render_sample((1, 0, 6), "sun", "none", 48)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["rgb"], c["rgb"])


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_synthetic_and_deliver_loaders_agree(small_set: Path, split: str):
    ours = load_dataset("synthetic", small_set, split, ALL)
    theirs = load_dataset("deliver", small_set, split, ALL)
    assert len(ours) == len(theirs) == SMALL[f"n_{split}"]
    for i in range(len(ours)):
        a, b = ours[i], theirs[i]
        assert a["meta"] == b["meta"]
        for key in [*ALL, "label"]:
            assert a[key].shape[-2:] == (SIZE, SIZE)
            assert torch.equal(a[key], b[key])


def test_every_weather_and_failure_occurs(small_set: Path):
    for split in ("train", "val", "test"):
        ds = load_dataset("synthetic", small_set, split, ["rgb"])
        metas = [ds[i]["meta"] for i in range(len(ds))]
        weathers = [m["weather"] for m in metas]
        assert set(weathers) == set(WEATHERS)
        assert max(map(weathers.count, WEATHERS)) - min(map(weathers.count, WEATHERS)) <= 1
        failures = [m["sensor_failure"] for m in metas]
        n = len(metas)
        assert failures.count("none") == n - round(0.3 * n)
        if split == "train":
            assert set(failures) == {"none", *SENSOR_FAILURES}
            for failure in SENSOR_FAILURES:
                assert len(load_dataset("synthetic", small_set, split, ["rgb"], case=failure))
        for m in metas:
            if m["sensor_failure"] != "none":
                assert m["scene"].endswith("_" + m["sensor_failure"])


def test_labels_use_the_subset_and_several_classes(small_set: Path):
    ds = load_dataset("synthetic", small_set, "train", ["rgb"])
    seen: set[int] = set()
    for i in range(len(ds)):
        present = set(torch.unique(ds[i]["label"]).tolist())
        assert present <= set(syn.SYNTHETIC_CLASS_IDS)
        assert len(present) >= 6
        seen |= present
    assert {ROAD, ROADLINE, render.SKY, render.BUILDING, render.CARS} <= seen


def test_sparse_and_dense_modalities(small_set: Path):
    ds = load_dataset("synthetic", small_set, "train", ALL)
    for i in range(len(ds)):
        sample = ds[i]
        nonzero = {k: (sample[k] != 0).any(0).float().mean().item() for k in ALL}
        assert nonzero["event"] < 0.3 and nonzero["lidar"] < 0.35, nonzero
        assert nonzero["lidar"] > 0.02
        not_sky = (sample["label"] != render.SKY).float().mean().item()
        assert nonzero["depth"] >= not_sky - 1e-6 and nonzero["depth"] > 0.5
        assert nonzero["rgb"] > 0.9


@pytest.mark.parametrize(
    ("failure", "changed"),
    [
        ("motionblur", {"rgb"}),
        ("overexposure", {"rgb"}),
        ("underexposure", {"rgb"}),
        ("lidarjitter", {"lidar"}),
        ("eventlowres", {"event"}),
    ],
)
def test_failure_acts_only_on_its_sensor(failure: str, changed: set[str]):
    key = (0, 0, 2)
    clean = render.render_sample(key, "cloud", "none", SIZE)
    broken = render.render_sample(key, "cloud", failure, SIZE)
    for name in clean:
        same = clean[name].shape == broken[name].shape and np.array_equal(clean[name], broken[name])
        assert same == (name not in changed), name
    rgb0, rgb1 = clean["rgb"].astype(float), broken["rgb"].astype(float)
    if failure == "overexposure":
        assert rgb1.mean() > rgb0.mean() + 40 and (rgb1 == 255).mean() > 0.3
    elif failure == "underexposure":
        assert rgb1.mean() < rgb0.mean() / 2
    elif failure == "motionblur":
        def horizontal_energy(x: np.ndarray) -> float:
            return float(np.abs(np.diff(x, axis=1)).mean())

        assert horizontal_energy(rgb1) < 0.7 * horizontal_energy(rgb0)
    elif failure == "lidarjitter":
        rows0 = np.nonzero(clean["lidar"].any(axis=(1, 2)))[0]
        rows1 = np.nonzero(broken["lidar"].any(axis=(1, 2)))[0]
        assert len(rows1) > len(rows0)  # points left their scan lines
    elif failure == "eventlowres":
        assert broken["event"].shape == (SIZE // 4, SIZE // 4, 3)


def test_eventlowres_file_is_small_and_loader_resizes(small_set: Path):
    ds = load_dataset("synthetic", small_set, "train", ["event"], case="eventlowres")
    ref = ds.refs[0]
    with Image.open(ref.paths["event"]) as img:
        assert img.size == (SIZE // 4, SIZE // 4)
    assert ds[0]["event"].shape == (3, SIZE, SIZE)


def test_road_and_road_line_differ_only_in_colour():
    key = (0, 1, 4)
    lined = render.render_sample(key, "cloud", "none", SIZE * 2)
    plain = render.render_sample(key, "cloud", "none", SIZE * 2, road_lines=False)
    # Same geometry: HHA, depth and LiDAR are byte-identical with and without the markings.
    for name in ("hha", "depth", "lidar"):
        assert np.array_equal(lined[name], plain[name]), name
    line = lined["label"] == ROADLINE
    road = lined["label"] == ROAD
    assert line.sum() > 20 and not (plain["label"] == ROADLINE).any()
    assert np.array_equal(lined["hha"][line], plain["hha"][line])
    assert set(np.unique(lined["hha"][line][:, 1:], axis=0).ravel()) <= set(
        np.unique(lined["hha"][road][:, 1:], axis=0).ravel()
    )
    # ... but not the same colour: markings are much brighter than asphalt.
    rgb = lined["rgb"].astype(float)
    assert rgb[line].mean() > rgb[road].mean() + 40
    assert not np.array_equal(lined["rgb"][line], plain["rgb"][line])


def test_weathers_act_on_their_sensors():
    key = (0, 2, 9)
    out = {w: render.render_sample(key, w, "none", SIZE) for w in WEATHERS}
    for w in WEATHERS:  # geometry is weather-independent
        assert np.array_equal(out[w]["hha"], out["cloud"]["hha"])
        assert np.array_equal(out[w]["label"], out["cloud"]["label"])
    assert out["night"]["rgb"].mean() < 0.5 * out["cloud"]["rgb"].mean()
    lidar = {w: (out[w]["lidar"] != 0).any(-1).mean() for w in WEATHERS}
    assert lidar["fog"] < lidar["cloud"] and lidar["rain"] < lidar["cloud"]
    events = {w: (out[w]["event"] != 0).any(-1).mean() for w in WEATHERS}
    assert events["night"] > events["cloud"]
    # Fog: far pixels lose contrast (RGB spread of the far half shrinks).
    far = out["cloud"]["depth"] > 3000
    assert out["fog"]["rgb"][far].std() < out["cloud"]["rgb"][far].std()


def test_plans_are_balanced():
    plans = syn.plan_split("train", 300, 0)
    weathers = [p.weather for p in plans]
    assert all(weathers.count(w) == 60 for w in WEATHERS)
    failures = [p.failure for p in plans]
    assert all(failures.count(f) == 18 for f in SENSOR_FAILURES)
    assert syn.plan_split("train", 300, 0) == plans
    assert syn.plan_split("train", 300, 1) != plans


def test_refuses_to_overwrite_a_foreign_folder(tmp_path: Path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match=str(foreign)):
        syn.generate_synthetic(foreign, size=32, n_train=1, n_val=1, n_test=1, workers=1)
    assert (foreign / "notes.txt").read_text() == "keep me"
    # An empty folder and a previous synthetic set are fine to (re)write.
    empty = tmp_path / "empty"
    empty.mkdir()
    syn.generate_synthetic(empty, size=32, n_train=1, n_val=1, n_test=1, workers=1)
    again = syn.generate_synthetic(empty, size=32, n_train=2, n_val=1, n_test=1, workers=1)
    assert len(load_dataset("synthetic", again, "train")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mine"]


def test_interrupted_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    original = render.render_sample

    def failing(key, weather, failure="none", size=256, **kwargs):
        if key[1] == syn.SPLIT_IDS["val"]:
            raise RuntimeError("boom")
        return original(key, weather, failure, size, **kwargs)

    monkeypatch.setattr(render, "render_sample", failing)
    out = tmp_path / "set"
    with pytest.raises(RuntimeError, match="boom"):
        syn.generate_synthetic(out, size=32, n_train=2, n_val=2, n_test=1, workers=1)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind either

    # A previous complete set survives a failed regeneration untouched.
    monkeypatch.setattr(render, "render_sample", original)
    syn.generate_synthetic(out, size=32, n_train=2, n_val=1, n_test=1, workers=1)
    before = _files(out)
    monkeypatch.setattr(render, "render_sample", failing)
    with pytest.raises(RuntimeError):
        syn.generate_synthetic(out, size=32, n_train=2, n_val=2, n_test=1, seed=5, workers=1)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_ensure_synthetic_uses_the_cache_dir_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    params = dict(size=32, n_train=2, n_val=1, n_test=1, seed=0)
    root = syn.default_synthetic_root(**params)
    assert root == tmp_path / "cache" / f"synthetic-v{syn.GENERATOR_VERSION}-32-2-1-1-0"
    first = syn.ensure_synthetic(**params, workers=1)
    assert first == root and (root / "synthetic.json").is_file()
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}

    def no_second_generation(*args, **kwargs):
        raise AssertionError("generated twice")

    monkeypatch.setattr(syn, "generate_synthetic", no_second_generation)
    monkeypatch.setattr(render, "render_sample", no_second_generation)
    assert syn.ensure_synthetic(**params, workers=1) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps


def test_default_root_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLEBENCH_CACHE_DIR", str(tmp_path))
    name = f"synthetic-v{syn.GENERATOR_VERSION}-256-300-100-100-0"
    assert syn.default_synthetic_root() == tmp_path / name


def test_no_root_opens_the_cached_default(small_set: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(syn, "ensure_synthetic", lambda: small_set)
    ds = load_dataset("synthetic", None, "val")
    assert ds.root == small_set and isinstance(ds, syn.SyntheticDataset)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("synthetic", small_set / "missing", "val")


def test_default_set_renders_each_sample_once_and_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The defaults (256 px, 300/100/100, seed 0) render every sample exactly once, and the
    cached copy is reused without rendering anything. Counted, not timed: the renderer is
    replaced by a stub returning one small pre-rendered sample, so no real rendering runs."""
    monkeypatch.setenv("MLEBENCH_CACHE_DIR", str(tmp_path / "cache"))
    stub = render.render_sample((0, 0, 0), "cloud", "none", 16)
    calls: list[tuple] = []

    def counting(key, weather, failure="none", size=256, **kwargs):
        calls.append((key, weather, failure, size))
        return stub

    monkeypatch.setattr(render, "render_sample", counting)
    root = syn.ensure_synthetic(workers=1)
    assert root == syn.default_synthetic_root()
    assert root.name == f"synthetic-v{syn.GENERATOR_VERSION}-256-300-100-100-0"
    expected = [
        ((0, syn.SPLIT_IDS[p.split], p.index), p.weather, p.failure, 256)
        for split, n in (("train", 300), ("val", 100), ("test", 100))
        for p in syn.plan_split(split, n, 0)
    ]
    assert len(calls) == 500
    assert sorted(calls) == sorted(expected)  # each sample once, at the default size
    manifest = json.loads((root / "synthetic.json").read_text())
    assert manifest["params"] == dict(size=256, n_train=300, n_val=100, n_test=100, seed=0)
    assert len(load_dataset("synthetic", root, "train", ["rgb"])) == 300
    # Second use: the cached set is returned as is, nothing is rendered again.
    calls.clear()
    assert syn.ensure_synthetic(workers=1) == root
    assert calls == []


def test_written_files_match_the_in_memory_render(small_set: Path):
    plan = next(p for p in syn.plan_split("val", SMALL["n_val"], 0) if p.failure != "none")
    arrays = syn.render_synthetic_sample(0, "val", plan.index, plan.weather, plan.failure, SIZE)
    where = (plan.weather, "val", plan.scene, plan.frame)
    for modality, name in (("rgb", "rgb"), ("depth", "hha"), ("event", "event"), ("lidar", "lidar")):
        with Image.open(deliver_path(small_set, modality, *where)) as img:
            assert np.array_equal(np.asarray(img), arrays[name]), modality
    with Image.open(deliver_path(small_set, "depth_raw", *where)) as img:
        assert np.array_equal(np.asarray(img), arrays["depth"])
    with Image.open(deliver_path(small_set, "label", *where)) as img:
        assert np.array_equal(np.asarray(img)[..., 0], arrays["label"] + 1)


def test_concurrent_ensure_generates_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two callers at once generate one set. Deterministic, not timed: the first caller's
    generation waits until the second caller has seen the set incomplete (outside the lock),
    so the second one must take the locked path and find the set complete there."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("MLEBENCH_CACHE_DIR", str(tmp_path))
    params = dict(size=32, n_train=2, n_val=1, n_test=1, seed=1)
    real_generate, real_complete = syn.generate_synthetic, syn._is_complete
    calls, misses = [], []
    both_missed = threading.Event()
    guard = threading.Lock()

    def is_complete(root, p):
        done = real_complete(root, p)
        with guard:
            if not done:
                misses.append(threading.get_ident())
                if len(set(misses)) == 2:
                    both_missed.set()
        return done

    def counting(*args, **kwargs):
        calls.append(1)
        # Both callers found the set missing before any of it was written.
        assert both_missed.wait(30), "the second caller never checked the cache"
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(syn, "_is_complete", is_complete)
    monkeypatch.setattr(syn, "generate_synthetic", counting)
    with ThreadPoolExecutor(2) as pool:
        roots = list(pool.map(lambda _: syn.ensure_synthetic(**params, workers=1), range(2)))
    assert roots[0] == roots[1] == syn.default_synthetic_root(**params)
    assert len(calls) == 1
