"""The embedded default data set: procedural street scenes in the DELIVER layout.

:func:`generate_synthetic` renders deterministic synthetic samples and writes them exactly as
the DELIVER release lays them out, so :class:`~mlebench.data.deliver.DeliverDataset` reads them
unchanged (``synthetic`` is registered as a DELIVER loader with its own :data:`SYNTHETIC_INFO`).
:func:`ensure_synthetic` keeps one generated copy in the user cache directory.

Scene model
    A straight street seen from a camera in a right-hand lane (random height 1.5-2.2 m,
    pitch 1-9 degrees down, small yaw, 72-90 degree field of view). Geometry comes first and
    is ray-cast exactly, per pixel: the road plane (``Road``) with ``RoadLine`` markings (edge
    lines, a dashed or double centre line, lane lines, sometimes a zebra crossing) painted on
    it; raised ``SideWalk`` slabs behind a 10-18 cm curb; ``Terrain`` verges and yards beyond;
    ``Building`` and ``Wall`` facades (vertical boxes at varying setbacks; walls are low and
    have a building further back); slatted ``Fence`` runs; ``Pole`` street lamps and sign
    posts carrying ``TrafficSign`` plates (square or round); ``Cars`` (body and cabin boxes,
    some vans) in the lanes and parking strips; ``Pedestrian`` ellipsoids (mostly on the
    sidewalk); ``Vegetation`` trees (trunk and ellipsoid crown) and hedges; ``Sky`` where
    nothing is hit. The G-buffer holds the class, depth, normal, world position (height above
    the road) and a procedural material albedo (asphalt, paint, paving tiles, grass, leaves,
    facades with window grids, concrete blocks, car paint with wheels and lights, ...).
    Thirteen of DELIVER's 25 classes occur (:data:`SYNTHETIC_CLASS_IDS`), hence the
    ``"present"`` mIoU convention.

Sensors (all aligned, one pinhole camera)
    * ``img/`` RGB: albedo lit by sky light and the sun (Lambert, shadows in sun), aerial
      haze, camera noise, gamma 2.2.
    * ``hha/`` HHA-like depth: R = disparity ``510 / z`` (z in m, clipped to 1..255), G = height
      above the road ``20 + 235 (1 - exp(-h / 6 m))``, B = angle between the normal and "up",
      0..180 degrees to 0..255; all 0 on sky.
    * ``depth/`` plain depth along the optical axis: 16-bit PNG in centimetres, 0 on sky.
    * ``event/`` event frame: the log intensity warped by the motion field of a small forward
      move and rotation (near pixels move more), one event per crossed contrast threshold;
      negative polarity in red, positive in blue, ``85 * count`` capped at 255, background 0.
    * ``lidar/`` returns on every k-th image row (``k = max(3, size // 64)``, rows jittered by
      one), elevation -50..+12 degrees, range < 100 m: R = ``1 + 254 (1 - range / 100 m)``,
      G = intensity (reflectivity x incidence), B = ``1 + 25 * height`` (m); 0 = no return.
    * ``semantic/`` the class ids through :func:`~mlebench.data.deliver.encode_deliver_label`
      in the red channel (G = B = 0); every pixel is labelled.

Weathers (folders ``cloud``, ``fog``, ``night``, ``rain``, ``sun``; balanced per split)
    * cloud: flat overcast light, textured grey sky, no shadows.
    * fog: exponential extinction with distance (visibility 35-90 m) in RGB, hence fewer far
      events; far LiDAR returns dropped (beam scattering). Depth/HHA unchanged.
    * night: near-dark ambient, a few street lamps (point lights), lit windows and car lights;
      high gain and strong noise in RGB; noisy events (log-intensity noise and background
      activity). LiDAR and depth are active/geometric and unaffected.
    * rain: darker light, wet (darker) asphalt, falling streaks in RGB that also fire events,
      haze; random LiDAR dropouts and weaker intensities.
    * sun: strong directional light with cast shadows, blue sky.

Sensor failures (a deterministic 30% of each split, balanced over the five; named in the scene
folder, e.g. ``scene0012_motionblur``, which is where the loader finds them)
    * motionblur: horizontal box blur of the RGB image (4-8% of its width).
    * overexposure / underexposure: RGB gain x4-8 (saturated) / x0.03-0.08 (crushed).
    * lidarjitter: every LiDAR return displaced by up to 4 px (at 256 px) and its range by
      ~0.5 m.
    * eventlowres: the event frame is computed and stored at 1/4 resolution (the loader
      resizes it back with nearest neighbour).
    Each failure acts only on its sensor: the other files are byte-identical to the sample
    without the failure.

Why the modalities are complementary
    Road and road line share their geometry and LiDAR reflectivity: only RGB separates them.
    Building and wall are both vertical planes, told apart mainly by texture and colour (walls
    are also lower). Sidewalk and road have similar grey tones but differ by the curb step in
    HHA/LiDAR height; terrain and sidewalk lie at the same height but differ in colour and in
    LiDAR reflectivity. At night and under over/underexposure RGB loses most classes while the
    dense HHA and the sparse, light-independent LiDAR keep the geometry; events are sparse and
    carry the edges under motion (and suffer at night and in fog).

Determinism
    Sample ``i`` of split ``s`` is rendered from the key ``(seed, split id, i)`` (numpy
    ``SeedSequence``); weathers and failures are assigned per split from ``(seed, split id)``.
    Files are byte-identical across runs and independent of ``workers``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import uuid
from concurrent.futures import ProcessPoolExecutor
import multiprocessing
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from mlebench.data import synthetic_render as _render
from mlebench.data.base import register_dataset
from mlebench.data.deliver import (
    DELIVER_CLASSES,
    DELIVER_INFO,
    SENSOR_FAILURES,
    WEATHERS,
    DeliverDataset,
    deliver_file,
    encode_deliver_label,
)
from mlebench.errors import DataError

log = logging.getLogger(__name__)

#: Bump whenever the output changes; it is part of the cache folder name.
GENERATOR_VERSION = 1
GENERATOR_NAME = "mlebench.synthetic"
MANIFEST = "synthetic.json"
FAILURE_FRACTION = 0.3
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
SYNTHETIC_CLASS_IDS: tuple[int, ...] = _render.USED_CLASS_IDS
# PNG compression: level 1 is several times faster than the default and still deterministic.
_PNG_LEVEL = 1

SYNTHETIC_INFO = dataclasses.replace(
    DELIVER_INFO,
    name="synthetic",
    miou_convention="present",
    notes=(
        "Procedural street scenes in the DELIVER layout (same 25 classes and label encoding; "
        f"only {len(SYNTHETIC_CLASS_IDS)} occur: "
        + ", ".join(DELIVER_CLASSES[c] for c in SYNTHETIC_CLASS_IDS)
        + "). Generated by mlebench.data.synthetic."
    ),
)


class SyntheticDataset(DeliverDataset):
    """The DELIVER loader, reporting the synthetic set's info."""

    info = SYNTHETIC_INFO


@register_dataset("synthetic", SYNTHETIC_INFO)
def _open_synthetic(root: str | Path | None, **kwargs: Any) -> SyntheticDataset:
    return SyntheticDataset(ensure_synthetic() if root is None else root, **kwargs)


# --------------------------------------------------------------------------------------------
# planning: which weather and failure each sample gets
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SamplePlan:
    """Where one sample goes and which weather and sensor failure it gets."""

    split: str
    index: int
    weather: str
    failure: str  # "none" or one of SENSOR_FAILURES

    @property
    def scene(self) -> str:
        base = f"scene{self.index:04d}"
        return base if self.failure == "none" else f"{base}_{self.failure}"

    @property
    def frame(self) -> str:
        return f"{self.index:06d}"


def sample_key(seed: int, split: str, index: int) -> tuple[int, int, int]:
    """The render key of one sample: everything random about it derives from this."""
    return (int(seed), SPLIT_IDS[split], int(index))


def render_synthetic_sample(
    seed: int, split: str, index: int, weather: str, failure: str = "none", size: int = 256
) -> dict[str, np.ndarray]:
    """Render one sample in memory (``rgb``, ``hha``, ``depth``, ``event``, ``lidar``, ``label``).

    The same arrays :func:`generate_synthetic` writes for sample ``index`` of ``split``, but with
    any weather and failure: the layout depends only on ``(seed, split, index)``.
    """
    return _render.render_sample(sample_key(seed, split, index), weather, failure, size)


def plan_split(split: str, n: int, seed: int) -> list[SamplePlan]:
    """Weather and failure of every sample of a split: balanced, shuffled, deterministic."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_IDS[split], 7919]))
    weather_rank = rng.permutation(n)
    failure_rank = rng.permutation(n)
    n_fail = int(round(FAILURE_FRACTION * n))
    plans = []
    for i in range(n):
        w = WEATHERS[int(weather_rank[i]) % len(WEATHERS)]
        r = int(failure_rank[i])
        f = SENSOR_FAILURES[r % len(SENSOR_FAILURES)] if r < n_fail else "none"
        plans.append(SamplePlan(split, i, w, f))
    return plans


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=_PNG_LEVEL)


def _write_sample(task: tuple[str, SamplePlan, int, int]) -> list[int]:
    """Render and write one sample (runs in a worker); returns its class pixel counts."""
    root_str, plan, size, seed = task
    root = Path(root_str)
    out = render_synthetic_sample(seed, plan.split, plan.index, plan.weather, plan.failure, size)
    where = (plan.weather, plan.split, plan.scene, plan.frame)
    _save_png(deliver_file(root, "rgb", *where), out["rgb"])
    _save_png(deliver_file(root, "depth", *where), out["hha"])
    _save_png(deliver_file(root, "depth_raw", *where), out["depth"])
    _save_png(deliver_file(root, "event", *where), out["event"])
    _save_png(deliver_file(root, "lidar", *where), out["lidar"])
    label = np.zeros((*out["label"].shape, 3), dtype=np.uint8)
    label[..., 0] = encode_deliver_label(out["label"])
    _save_png(deliver_file(root, "label", *where), label)
    return np.bincount(out["label"].ravel(), minlength=len(DELIVER_CLASSES)).tolist()


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("generator") == GENERATOR_NAME else None


def _params(size: int, n_train: int, n_val: int, n_test: int, seed: int) -> dict[str, int]:
    return {"size": size, "n_train": n_train, "n_val": n_val, "n_test": n_test, "seed": seed}


def _pool_context():
    methods = multiprocessing.get_all_start_methods()
    return get_context("fork" if "fork" in methods else "spawn")


def _default_workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


def generate_synthetic(
    out: Path,
    *,
    size: int = 256,
    n_train: int = 300,
    n_val: int = 100,
    n_test: int = 100,
    seed: int = 0,
    workers: int | None = None,
) -> Path:
    """Render the synthetic data set into ``out`` (DELIVER layout) and return ``out``.

    The set is written to a temporary sibling folder and renamed into place at the end, so an
    interrupted run leaves nothing at ``out``. A previous synthetic set at ``out`` is replaced;
    any other non-empty folder is refused with :class:`DataError`.

    ``workers`` (default: up to 2) processes render samples in parallel (forked where the
    platform allows, so library callers need no ``__main__`` guard). The output does not
    depend on ``workers``.
    """
    out = Path(out).expanduser().absolute()
    if size < 16:
        raise DataError(f"synthetic: size must be at least 16 px, got {size}")
    if seed < 0:
        raise DataError(f"synthetic: seed must be a non-negative integer, got {seed}")
    for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if n < 1:
            raise DataError(f"synthetic: {name} must be at least 1, got {n}")
    if out.exists():
        if not out.is_dir():
            raise DataError(f"synthetic: {out} exists and is not a directory")
        if any(out.iterdir()) and _read_manifest(out) is None:
            raise DataError(
                f"synthetic: refusing to overwrite {out}: it is not empty and holds no "
                f"{MANIFEST} of a previous synthetic set"
            )
    workers = _default_workers() if workers is None else max(1, int(workers))
    params = _params(size, n_train, n_val, n_test, seed)
    plans = [
        p
        for split, n in (("train", n_train), ("val", n_val), ("test", n_test))
        for p in plan_split(split, n, seed)
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tasks = [(str(tmp), p, size, seed) for p in plans]
        log.info("synthetic: rendering %d samples at %d px into %s (%d workers)",
                 len(tasks), size, out, workers)
        if workers > 1 and len(tasks) > 1:
            # fork: a spawned worker re-imports the caller's __main__, which hangs or recurses
            # in scripts without a __main__ guard (e.g. pre-training calling ensure_synthetic).
            # The workers only run numpy code, never torch, so the parent's torch/OpenMP
            # threads cannot deadlock them.
            pool = ProcessPoolExecutor(workers, mp_context=_pool_context())
            try:
                chunk = max(1, len(tasks) // (workers * 8))
                counts = list(pool.map(_write_sample, tasks, chunksize=chunk))
            except BaseException:
                # Do not render the queued rest (e.g. after Ctrl-C) before cleaning up.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown()
        else:
            counts = [_write_sample(t) for t in tasks]
        manifest = _manifest(params, plans, counts)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _manifest(params: dict[str, int], plans: list[SamplePlan], counts: list[list[int]]) -> dict:
    totals = np.sum(np.asarray(counts, dtype=np.int64), axis=0)
    splits: dict[str, dict[str, Any]] = {}
    for p in plans:
        entry = splits.setdefault(p.split, {"samples": 0, "weather": {}, "sensor_failure": {}})
        entry["samples"] += 1
        entry["weather"][p.weather] = entry["weather"].get(p.weather, 0) + 1
        entry["sensor_failure"][p.failure] = entry["sensor_failure"].get(p.failure, 0) + 1
    return {
        "generator": GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "params": params,
        "layout": "deliver",
        "classes_used": [DELIVER_CLASSES[c] for c in SYNTHETIC_CLASS_IDS],
        "class_pixel_fraction": {
            DELIVER_CLASSES[c]: round(float(totals[c] / totals.sum()), 6)
            for c in SYNTHETIC_CLASS_IDS
        },
        "splits": splits,
        "encodings": {
            "depth/": "uint16 PNG, depth along the optical axis in centimetres, 0 = sky",
            "hha/": "R disparity 510/z, G 20+235(1-exp(-h/6m)), B normal-to-up angle 0..180deg",
            "event/": "R negative, B positive polarity, 85 per threshold crossing, 0 = none",
            "lidar/": "R 1+254(1-range/100m), G intensity, B 1+25*height(m), 0 = no return",
            "semantic/": "R = class id + 1 (DELIVER encoding)",
        },
    }


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished set to ``out``, replacing a previous set only once it is complete."""
    if not out.exists():
        tmp.rename(out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the cached default
# --------------------------------------------------------------------------------------------
def _cache_dir() -> Path:
    env = os.environ.get("MLEBENCH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mlebench"))


def default_synthetic_root(
    size: int = 256, n_train: int = 300, n_val: int = 100, n_test: int = 100, seed: int = 0
) -> Path:
    """Cache folder of a synthetic set (``$MLEBENCH_CACHE_DIR`` overrides the user cache dir)."""
    name = f"synthetic-v{GENERATOR_VERSION}-{size}-{n_train}-{n_val}-{n_test}-{seed}"
    return _cache_dir() / name


def _is_complete(root: Path, params: dict[str, int]) -> bool:
    manifest = _read_manifest(root)
    return (
        manifest is not None
        and manifest.get("version") == GENERATOR_VERSION
        and manifest.get("params") == params
    )


def ensure_synthetic(
    *,
    size: int = 256,
    n_train: int = 300,
    n_val: int = 100,
    n_test: int = 100,
    seed: int = 0,
    workers: int | None = None,
) -> Path:
    """The cached synthetic set's root, generated on first use (under a file lock)."""
    from filelock import FileLock

    params = _params(size, n_train, n_val, n_test, seed)
    root = default_synthetic_root(**params)
    if _is_complete(root, params):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    # Two processes asking at once: the second waits, then finds the set complete.
    with FileLock(str(root.parent / f".{root.name}.lock")):
        if not _is_complete(root, params):
            generate_synthetic(root, **params, workers=workers)
    return root


def resolved_root(dataset: str, data_root: Path | None) -> Path | None:
    """The folder a job on ``dataset`` reads: ``data_root``, or the cached synthetic set's when
    none is given (None for a real data set without a root: its loader says so)."""
    if data_root is not None:
        return Path(data_root)
    return default_synthetic_root() if dataset == "synthetic" else None


def announce_synthetic(dataset: str, data_root: Path | None, echo: Callable[[str], None]) -> None:
    """Say so before the embedded synthetic set is generated (first use: about half a minute)."""
    if dataset != "synthetic" or data_root is not None:
        return
    root = default_synthetic_root()
    if not (root / MANIFEST).is_file():
        echo(f"generating the synthetic data set in {root} (first use only; about 30 s on 2 CPU cores) ...")
