"""Rendering of one synthetic street scene into RGB, HHA, depth, events, LiDAR and labels.

The scene model, the weathers and the sensor failures are described in
:mod:`mlebench.data.synthetic`; this module holds the machinery: a per-sample layout
(:func:`build_scene`), a vectorised ray caster over axis-aligned boxes, ellipsoids and the
ground plane (:func:`trace`), procedural materials, and one function per sensor.

Coordinates: metres, ``x`` to the right across the street, ``y`` up (the road surface is
``y = 0``), ``z`` forward along the street. The camera looks roughly along ``+z``; rays are
kept unnormalised with a camera-frame forward component of 1, so the ray parameter of a hit
*is* its depth along the optical axis.

Everything random is drawn from generators seeded by the sample key and a fixed stream number
(layout, textures, weather, noise, events, LiDAR, failure are separate streams), so that the
same key with another weather or failure keeps the same layout, and toggling a failure leaves
every other sensor byte-identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

from mlebench.data.deliver import DELIVER_CLASSES, SENSOR_FAILURES, WEATHERS


def _cid(name: str) -> int:
    return DELIVER_CLASSES.index(name)


BUILDING, FENCE, PEDESTRIAN, POLE = map(_cid, ("Building", "Fence", "Pedestrian", "Pole"))
ROADLINE, ROAD, SIDEWALK, VEGETATION = map(_cid, ("RoadLine", "Road", "SideWalk", "Vegetation"))
CARS, WALL, TRAFFICSIGN = map(_cid, ("Cars", "Wall", "TrafficSign"))
SKY, TERRAIN = map(_cid, ("Sky", "Terrain"))

#: The DELIVER class ids the synthetic scenes use (every other class never occurs).
USED_CLASS_IDS: tuple[int, ...] = tuple(
    sorted(
        (BUILDING, FENCE, PEDESTRIAN, POLE, ROADLINE, ROAD, SIDEWALK, VEGETATION, CARS, WALL,
         TRAFFICSIGN, SKY, TERRAIN)
    )
)

# Material kinds (how the albedo is textured).
(K_SKY, K_ASPHALT, K_PAINT, K_PAVING, K_GRASS, K_LEAVES, K_BARK, K_FACADE, K_BLOCKS, K_METAL,
 K_SIGN, K_CARPAINT, K_GLASS, K_CLOTH, K_SKIN, K_LAMP) = range(16)

# Random streams of one sample; fixed numbers so that adding a stream never shifts another.
_S_LAYOUT, _S_TEXTURE, _S_WEATHER, _S_NOISE, _S_EVENT, _S_LIDAR, _S_FAILURE, _S_CAMERA = range(8)

LIDAR_MAX_RANGE = 100.0  # metres; no return beyond
EVENT_THRESHOLD = (0.22, 0.32)  # contrast threshold range (log-intensity)
_EPS = 1e-4


def _rng(key: Sequence[int], stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([*key, 1000 + stream]))


# --------------------------------------------------------------------------------------------
# scene description
# --------------------------------------------------------------------------------------------
@dataclass
class _Materials:
    cls: list[int] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    col: list[tuple[float, float, float]] = field(default_factory=list)
    col2: list[tuple[float, float, float]] = field(default_factory=list)
    par: list[tuple[float, float, float, float]] = field(default_factory=list)
    refl: list[float] = field(default_factory=list)

    def add(self, cls: int, kind: int, col, col2=(0.0, 0.0, 0.0), par=(0.0, 0.0, 0.0, 0.0),
            refl: float = 0.3) -> int:
        self.cls.append(cls)
        self.kind.append(kind)
        self.col.append(tuple(float(c) for c in col))
        self.col2.append(tuple(float(c) for c in col2))
        self.par.append(tuple(float(p) for p in par))
        self.refl.append(float(refl))
        return len(self.cls) - 1


@dataclass
class Scene:
    """One sample's geometry, materials and camera (see the module docstring for axes)."""

    size: int
    focal: float
    origin: np.ndarray  # (3,) camera centre
    rot: np.ndarray  # (3, 3) camera-to-world rotation (columns: right, up, forward)
    road_half: float
    lanes: int
    lane_width: float
    parking: float
    line_width: float
    centre_double: bool
    centre_yellow: bool
    dash: tuple[float, float, float]  # dash length, period, phase
    crosswalk: tuple[float, float] | None  # z start, length
    mats: _Materials
    m_road: int
    m_line: int
    m_line_centre: int
    m_ground: int
    m_sky: int = -1
    boxes: list[tuple] = field(default_factory=list)  # (lo, hi, mat, alpha, alpha_par, caster)
    ellipsoids: list[tuple] = field(default_factory=list)  # (centre, radii, mat, caster)
    lamps: list[tuple[np.ndarray, tuple[float, float, float]]] = field(default_factory=list)

    def box(self, lo, hi, mat: int, alpha: int = 0, alpha_par=(0.0, 0.0, 0.0, 0.0),
            caster: bool = True) -> None:
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        self.boxes.append((np.minimum(lo, hi), np.maximum(lo, hi), mat, alpha, alpha_par, caster))

    def ellipsoid(self, centre, radii, mat: int, caster: bool = True) -> None:
        self.ellipsoids.append((np.asarray(centre, float), np.asarray(radii, float), mat, caster))


def _colour(rng: np.random.Generator, palette: Sequence[tuple[float, float, float]],
            jitter: float = 0.08) -> tuple[float, float, float]:
    base = np.asarray(palette[rng.integers(len(palette))], float)
    return tuple(np.clip(base * (1 + rng.uniform(-jitter, jitter, 3)), 0.01, 0.95))


_FACADES = [(0.55, 0.52, 0.48), (0.45, 0.30, 0.22), (0.62, 0.58, 0.50), (0.35, 0.35, 0.37),
            (0.70, 0.68, 0.64), (0.50, 0.40, 0.30), (0.40, 0.42, 0.46), (0.58, 0.46, 0.36)]
_WALLS = [(0.42, 0.42, 0.40), (0.50, 0.47, 0.40), (0.33, 0.33, 0.34), (0.46, 0.44, 0.36)]
_CARS = [(0.80, 0.80, 0.80), (0.04, 0.04, 0.05), (0.45, 0.46, 0.48), (0.55, 0.05, 0.04),
         (0.05, 0.12, 0.40), (0.25, 0.27, 0.30), (0.70, 0.62, 0.45), (0.10, 0.30, 0.15)]
_CLOTHES = [(0.05, 0.05, 0.07), (0.15, 0.18, 0.35), (0.45, 0.10, 0.10), (0.55, 0.52, 0.45),
            (0.20, 0.30, 0.18), (0.60, 0.45, 0.10), (0.30, 0.30, 0.32)]
_SIGNS = [(0.60, 0.04, 0.04), (0.04, 0.15, 0.55), (0.75, 0.60, 0.05), (0.80, 0.80, 0.80)]


def build_scene(key: Sequence[int], size: int) -> Scene:
    """Draw a random street layout and camera from the sample key's layout stream."""
    rng = _rng(key, _S_LAYOUT)
    u = rng.uniform
    mats = _Materials()

    lanes = int(rng.choice([2, 2, 4]))
    lane_w = u(3.0, 3.6)
    parking = float(rng.choice([0.0, u(2.0, 2.5)]))
    road_half = lanes * lane_w / 2 + parking
    line_w = u(0.12, 0.2)
    centre_yellow = bool(rng.random() < 0.4)
    centre_double = bool(lanes == 4 or rng.random() < 0.25)
    dash = (u(2.0, 4.0), u(7.0, 12.0), u(0.0, 10.0))
    crosswalk = (u(8.0, 40.0), u(3.0, 4.5)) if rng.random() < 0.35 else None

    asphalt = u(0.09, 0.16)
    m_road = mats.add(ROAD, K_ASPHALT, (asphalt, asphalt, asphalt * 1.05), refl=0.25)
    white = (0.78, 0.78, 0.74)
    m_line = mats.add(ROADLINE, K_PAINT, white, col2=(asphalt,) * 3, refl=0.25)
    m_line_c = mats.add(ROADLINE, K_PAINT, (0.75, 0.55, 0.08) if centre_yellow else white,
                        col2=(asphalt,) * 3, refl=0.25)
    grass = _colour(rng, [(0.14, 0.20, 0.06), (0.20, 0.22, 0.09), (0.24, 0.20, 0.11)])
    m_ground = mats.add(TERRAIN, K_GRASS, grass, refl=0.5)

    # Camera: in a right-hand lane, a little above a car roof, pitched slightly down.
    lane = int(rng.integers(lanes // 2))
    cam_x = lane_w * (lane + 0.5) + u(-0.3, 0.3)
    cam_h = u(1.5, 2.2)
    pitch = math.radians(u(-9.0, -1.0))
    yaw = math.radians(u(-6.0, 6.0))
    fov = math.radians(u(72.0, 90.0))
    focal = (size / 2) / math.tan(fov / 2)
    cp, sp, cy, sy = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    r_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]], float)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], float)
    rot = r_yaw @ r_pitch

    scene = Scene(
        size=size, focal=focal, origin=np.array([cam_x, cam_h, 0.0]), rot=rot,
        road_half=road_half, lanes=lanes, lane_width=lane_w, parking=parking, line_width=line_w,
        centre_double=centre_double, centre_yellow=centre_yellow, dash=dash, crosswalk=crosswalk,
        mats=mats, m_road=m_road, m_line=m_line, m_line_centre=m_line_c, m_ground=m_ground,
    )

    z_near, z_far = -30.0, 220.0
    closing = u(60.0, 200.0) if rng.random() < 0.5 else None
    if closing is not None:
        z_far = closing
        m = mats.add(BUILDING, K_FACADE, _colour(rng, _FACADES),
                     par=(u(2.5, 4.0), u(3.0, 3.6), u(0, 3), 0.0), refl=0.35)
        scene.box((-80, 0, closing), (80, u(12, 40), closing + 20), m)

    for side in (-1.0, 1.0):
        _build_side(scene, rng, side, z_near, z_far)

    _build_cars(scene, rng, cam_x)
    scene.m_sky = mats.add(SKY, K_SKY, (0.0, 0.0, 0.0), refl=0.0)  # what rays that miss get
    return scene


def _build_side(scene: Scene, rng: np.random.Generator, side: float, z_near: float,
                z_far: float) -> None:
    """Sidewalk, verge, facades, fences, trees, poles, signs and pedestrians on one side."""
    u, mats, s = rng.uniform, scene.mats, side
    w_r = scene.road_half
    w_s = u(1.8, 4.0)
    curb = u(0.10, 0.18)
    verge = 0.0 if rng.random() < 0.25 else u(1.5, 6.0)
    x_s = w_r + w_s  # outer edge of the sidewalk
    x_f = x_s + verge  # facade line

    def X(a: float, b: float) -> tuple[float, float]:
        return (s * a, s * b)

    paving = _colour(rng, [(0.42, 0.40, 0.37), (0.50, 0.47, 0.42), (0.36, 0.36, 0.37)])
    m_side = mats.add(SIDEWALK, K_PAVING, paving, par=(u(0.4, 1.0), 0, 0, 0), refl=0.35)
    m_terr = mats.add(TERRAIN, K_GRASS,
                      _colour(rng, [(0.14, 0.20, 0.06), (0.20, 0.22, 0.09), (0.26, 0.21, 0.12)]),
                      refl=0.5)
    xa, xb = X(w_r, x_s)
    scene.box((xa, -1.0, z_near), (xb, curb, 600.0), m_side, caster=False)
    xa, xb = X(x_s, x_s + 80.0)
    scene.box((xa, -1.0, z_near), (xb, curb + 0.02, 600.0), m_terr, caster=False)

    m_leaf = mats.add(VEGETATION, K_LEAVES,
                      _colour(rng, [(0.06, 0.13, 0.03), (0.09, 0.15, 0.04), (0.12, 0.14, 0.05)]),
                      refl=0.6)
    m_bark = mats.add(VEGETATION, K_BARK, _colour(rng, [(0.16, 0.11, 0.07), (0.22, 0.18, 0.14)]),
                      refl=0.4)

    def tree(x: float, z: float, max_rx: float) -> None:
        trunk_h, rx, ry, w = u(1.8, 3.5), u(1.2, max(1.3, max_rx)), u(1.5, 3.5), u(0.25, 0.4)
        xa, xb = X(x - w / 2, x + w / 2)
        scene.box((xa, curb, z - w / 2), (xb, curb + trunk_h + ry * 0.5, z + w / 2), m_bark)
        scene.ellipsoid((s * x, curb + trunk_h + ry * 0.8, z), (rx, ry, u(1.2, 3.0)), m_leaf)

    # Facades: buildings (windows) and walls (blocks, lower, with a building set back behind);
    # now and then an alley, or a lawn with trees.
    z = z_near + u(-5, 5)
    while z < z_far:
        length = u(8.0, 30.0)
        if rng.random() < 0.1:
            z += u(4.0, 12.0)
            continue
        if rng.random() < 0.12:
            length = u(15.0, 40.0)
            for _ in range(int(rng.integers(1, 5))):
                tree(x_f + u(1.0, 15.0), z + u(0.0, length), 3.0)
            m_far = mats.add(BUILDING, K_FACADE, _colour(rng, _FACADES),
                             par=(u(2.5, 4.0), u(3.0, 3.6), u(0, 3), 0.0), refl=0.35)
            xa, xb = X(x_f + u(20.0, 35.0), x_f + 50.0)
            scene.box((xa, 0, z), (xb, u(8.0, 35.0), z + length), m_far)
            z += length
            continue
        facade = _colour(rng, _FACADES)
        m_b = mats.add(BUILDING, K_FACADE, facade, par=(u(2.5, 4.0), u(3.0, 3.6), u(0, 3), 0.0),
                       refl=0.35)
        if rng.random() < 0.35:
            m_w = mats.add(WALL, K_BLOCKS, _colour(rng, _WALLS),
                           par=(u(0.3, 0.6), u(0.8, 1.6), 0, 0), refl=0.4)
            x0 = x_f + u(0.0, 0.8)
            xa, xb = X(x0, x0 + 0.3)
            scene.box((xa, 0, z), (xb, curb + u(1.5, 3.8), z + length), m_w)
            x0 = x_f + u(4.0, 12.0)
            xa, xb = X(x0, x0 + u(10, 20))
            scene.box((xa, 0, z + u(-2, 2)), (xb, u(6.0, 30.0), z + length + u(-2, 2)), m_b)
        else:
            x0 = x_f + (0.0 if rng.random() < 0.5 else u(0.0, 3.0))
            xa, xb = X(x0, x0 + u(10, 20))
            scene.box((xa, 0, z), (xb, u(6.0, 35.0), z + length), m_b)
        z += length

    # Fences between sidewalk and verge (or along the facade line), with gaps.
    if rng.random() < 0.5:
        m_f = mats.add(FENCE, K_METAL, _colour(rng, [(0.12, 0.14, 0.12), (0.30, 0.30, 0.30),
                                                      (0.35, 0.25, 0.15)]), refl=0.45)
        x0 = x_s + 0.05 if verge > 0 else x_f - 0.1
        z = u(-10, 10)
        period, slat = u(0.15, 0.3), u(0.3, 0.6)
        height = u(0.9, 1.6)
        while z < 120:
            length = u(8, 40)
            xa, xb = X(x0, x0 + 0.05)
            scene.box((xa, curb, z), (xb, curb + height, z + length), m_f, alpha=1,
                      alpha_par=(period, slat, curb + height, 0.08))
            z += length + u(2, 15)

    # Vegetation: trees on the verge (or in sidewalk pits) and hedges.
    tree_x = x_s + verge / 2 if verge >= 1.5 else (w_r + w_s - 0.9 if rng.random() < 0.5 else None)
    if tree_x is not None:
        z = u(0, 10)
        spacing = u(6.0, 14.0)
        while z < 150:
            tree(tree_x, z, min(3.0, verge / 2 + 1.0))
            z += spacing * u(0.7, 1.3)
    if verge >= 1.5 and rng.random() < 0.4:
        z = u(-10, 10)
        while z < 100:
            length = u(5, 25)
            xa, xb = X(x_f - u(0.8, 1.4), x_f - 0.1)
            scene.box((xa, curb, z), (xb, curb + u(0.7, 1.6), z + length), m_leaf)
            z += length + u(3, 20)

    # Poles: street lamps with an arm over the road, sign posts; signs face the camera.
    m_pole = mats.add(POLE, K_METAL, _colour(rng, [(0.35, 0.36, 0.37), (0.15, 0.16, 0.17)]),
                      refl=0.5)
    m_lamp = mats.add(POLE, K_LAMP, (0.7, 0.7, 0.65),
                      col2=(1.0, 0.62, 0.28) if rng.random() < 0.5 else (0.9, 0.95, 1.0), refl=0.5)
    px = w_r + u(0.3, 0.6)
    z = u(0.0, 15.0)
    while z < 160:
        pw = u(0.12, 0.25)
        lamp = rng.random() < 0.6
        height = u(6.0, 9.0) if lamp else u(2.6, 3.4)
        xa, xb = X(px - pw / 2, px + pw / 2)
        scene.box((xa, curb, z - pw / 2), (xb, curb + height, z + pw / 2), m_pole)
        if lamp:
            arm = u(1.2, 2.5)
            xa, xb = X(px - arm, px)
            scene.box((xa, curb + height - 0.15, z - 0.06), (xb, curb + height, z + 0.06), m_pole)
            xa, xb = X(px - arm - 0.2, px - arm + 0.4)
            scene.box((xa, curb + height - 0.35, z - 0.18), (xb, curb + height - 0.1, z + 0.18),
                      m_lamp)
            scene.lamps.append((np.array([s * (px - arm + 0.1), curb + height - 0.5, z]),
                                scene.mats.col2[m_lamp]))
        if not lamp or rng.random() < 0.3:
            half = u(0.28, 0.45)
            cy = curb + (height - half - 0.05 if not lamp else u(2.3, 3.0))
            disc = bool(rng.random() < 0.5)
            m_s = mats.add(TRAFFICSIGN, K_SIGN, _colour(rng, _SIGNS, 0.03),
                           par=(s * px, cy, half, float(disc)), refl=0.95)
            xa, xb = X(px - half, px + half)
            scene.box((xa, cy - half, z - pw / 2 - 0.06), (xb, cy + half, z - pw / 2 - 0.02), m_s,
                      alpha=2 if disc else 0, alpha_par=(s * px, cy, half, 0.0))
        z += u(12.0, 30.0)

    # Pedestrians: an ellipsoid body and a head, on the sidewalk (a few cross the road).
    for _ in range(int(rng.poisson(2.0))):
        crossing = rng.random() < 0.15
        if crossing:
            x, z, base = u(-w_r, w_r), u(8.0, 35.0), 0.0
        else:
            x, z, base = s * u(w_r + 0.5, x_s - 0.3), u(2.0, 45.0), curb
        h = u(1.5, 1.9)
        m_c = mats.add(PEDESTRIAN, K_CLOTH, _colour(rng, _CLOTHES), refl=0.3)
        skin = _colour(rng, [(0.6, 0.42, 0.32), (0.35, 0.22, 0.15), (0.7, 0.55, 0.45)])
        m_h = mats.add(PEDESTRIAN, K_SKIN, skin, refl=0.3)
        body = (h - 0.24) / 2
        scene.ellipsoid((x, base + body, z), (u(0.2, 0.27), body, u(0.13, 0.19)), m_c)
        scene.ellipsoid((x, base + h - 0.12, z), (0.1, 0.12, 0.1), m_h)


def _build_cars(scene: Scene, rng: np.random.Generator, cam_x: float) -> None:
    """Cars in the lanes (rears visible on the right, fronts on the left) and parked ones."""
    u, mats = rng.uniform, scene.mats
    lw, n = scene.lane_width, scene.lanes
    slots: list[tuple[float, float, float]] = []  # (x, z_min, direction)
    for lane in range(n):
        x = (lane - n / 2 + 0.5) * lw
        direction = 1.0 if x > 0 else -1.0
        z_min = 7.0 if abs(x - cam_x) < lw / 2 else -3.0
        slots.append((x, z_min, direction))
    if scene.parking > 0:
        for s in (-1.0, 1.0):
            slots.append((s * (n * lw / 2 + scene.parking / 2), -2.0, s))
    for x0, z_min, direction in slots:
        z = z_min + u(0, 15)
        for _ in range(int(rng.poisson(1.3))):
            length, width = u(3.9, 4.8), u(1.7, 2.0)
            van = rng.random() < 0.15
            hb = u(1.7, 2.1) if van else u(0.85, 1.05)
            x = x0 + u(-0.3, 0.3)
            paint = _colour(rng, _CARS, 0.05)
            m_b = mats.add(CARS, K_CARPAINT, paint, par=(x, z + length / 2, length, direction),
                           refl=0.7)
            scene.box((x - width / 2, 0.2, z), (x + width / 2, hb, z + length), m_b)
            if not van:
                m_g = mats.add(CARS, K_GLASS, (0.05, 0.06, 0.07), col2=paint, refl=0.2)
                c0 = z + length * u(0.2, 0.35)
                scene.box((x - width / 2 + 0.1, hb, c0), (x + width / 2 - 0.1, hb + u(0.42, 0.58),
                          c0 + length * u(0.4, 0.5)), m_g)
            z += length + u(3.0, 25.0)


# --------------------------------------------------------------------------------------------
# ray casting
# --------------------------------------------------------------------------------------------
@dataclass
class GBuffer:
    """Per-pixel geometry of the first hit; sky pixels have ``t = inf`` and the sky material."""

    t: np.ndarray  # (H, W) depth along the optical axis, metres
    mat: np.ndarray  # (H, W) material index
    normal: np.ndarray  # (H, W, 3) unit surface normal (0 on sky)
    pos: np.ndarray  # (H, W, 3) world hit position (0 on sky)
    dirs: np.ndarray  # (H, W, 3) ray directions (camera-forward component 1)
    sky: np.ndarray  # (H, W) bool


def _ray_dirs(scene: Scene) -> np.ndarray:
    s = scene.size
    c = (np.arange(s, dtype=np.float64) + 0.5 - s / 2) / scene.focal
    a, b = np.meshgrid(c, -c)  # camera x right, y up
    cam = np.stack([a, b, np.ones_like(a)], axis=-1)
    d = cam @ scene.rot.T
    d[np.abs(d) < 1e-9] = 1e-9  # no exact zeros: slab tests divide by the components
    return d


_NEAR = 0.01
# Index pairs of up to 16 points: the segments whose near-plane crossings bound a clipped hull.
_PAIRS = np.array([(i, j) for i in range(16) for j in range(i + 1, 16)])


def _project_bbox(scene: Scene, pts: np.ndarray) -> tuple[int, int, int, int] | None:
    """Screen rectangle ``(i0, i1, j0, j1)`` covering the convex hull of ``pts``, or ``None``.

    The hull is first clipped to the part in front of the camera (segments between every pair
    of points are cut at the near plane), so boxes reaching behind the camera still get a
    tight rectangle instead of the whole image.
    """
    cam = (pts - scene.origin) @ scene.rot  # world -> camera frame
    z = cam[:, 2]
    front = z > _NEAR
    if not front.any():
        return None
    keep = [cam[front]]
    if not front.all():
        pairs = _PAIRS[(_PAIRS[:, 1] < len(pts))]
        a, b = cam[pairs[:, 0]], cam[pairs[:, 1]]
        cross = (a[:, 2] > _NEAR) != (b[:, 2] > _NEAR)
        a, b = a[cross], b[cross]
        w = ((_NEAR - a[:, 2]) / (b[:, 2] - a[:, 2]))[:, None]
        keep.append(a + w * (b - a))
    cam = np.concatenate(keep)
    z = np.maximum(cam[:, 2], _NEAR)
    s, f = scene.size, scene.focal
    cols = np.clip(cam[:, 0] / z * f + s / 2, -1.0, s + 1.0)
    rows = np.clip(-cam[:, 1] / z * f + s / 2, -1.0, s + 1.0)
    j0, j1 = int(max(math.floor(cols.min()) - 1, 0)), int(min(math.ceil(cols.max()) + 1, s))
    i0, i1 = int(max(math.floor(rows.min()) - 1, 0)), int(min(math.ceil(rows.max()) + 1, s))
    if i0 >= i1 or j0 >= j1:
        return None
    return i0, i1, j0, j1


_CORNER_BITS = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=bool)


def _corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The 8 corners of boxes: ``(3,)`` bounds give ``(8, 3)``, ``(n, 3)`` give ``(n, 8, 3)``."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    return np.where(_CORNER_BITS, hi[..., None, :], lo[..., None, :])


def _project_many(scene: Scene, pts: np.ndarray) -> list[tuple[int, int, int, int] | None]:
    """:func:`_project_bbox` of many point sets ``(n, k, 3)``, vectorised where all lie in front."""
    if len(pts) == 0:
        return []
    cam = (pts - scene.origin) @ scene.rot
    z = cam[..., 2]
    front = (z > _NEAR).all(-1)
    s, f = scene.size, scene.focal
    zz = np.maximum(z, _NEAR)
    cols = np.clip(cam[..., 0] / zz * f + s / 2, -1.0, s + 1.0)
    rows = np.clip(-cam[..., 1] / zz * f + s / 2, -1.0, s + 1.0)
    j0 = np.maximum(np.floor(cols.min(-1)) - 1, 0).astype(int)
    j1 = np.minimum(np.ceil(cols.max(-1)) + 1, s).astype(int)
    i0 = np.maximum(np.floor(rows.min(-1)) - 1, 0).astype(int)
    i1 = np.minimum(np.ceil(rows.max(-1)) + 1, s).astype(int)
    out: list[tuple[int, int, int, int] | None] = []
    for n in range(len(pts)):
        if not front[n]:
            out.append(_project_bbox(scene, pts[n]))
        elif i0[n] >= i1[n] or j0[n] >= j1[n]:
            out.append(None)
        else:
            out.append((int(i0[n]), int(i1[n]), int(j0[n]), int(j1[n])))
    return out


def _alpha_keep(kind: int, par: tuple, p: np.ndarray) -> np.ndarray:
    """Cut-outs of thin boxes: fence slats (kind 1) and round signs (kind 2)."""
    if kind == 1:
        period, slat, top, rail = par
        frac = np.mod(p[..., 2], period) / period
        return (frac < slat) | (p[..., 1] > top - rail)
    cx, cy, half, _ = par
    return (p[..., 0] - cx) ** 2 + (p[..., 1] - cy) ** 2 <= half * half


def _slab(lo: np.ndarray, hi: np.ndarray, o: Sequence[np.ndarray | float],
          inv: Sequence[np.ndarray | float]) -> tuple[np.ndarray, ...]:
    """Ray/box slab test: entry and exit distances, and the per-axis entry distances."""
    tmin, tmax = [], []
    for k in range(3):
        t1 = (lo[k] - o[k]) * inv[k]
        t2 = (hi[k] - o[k]) * inv[k]
        tmin.append(np.minimum(t1, t2))
        tmax.append(np.maximum(t1, t2))
    tnear = np.maximum(np.maximum(tmin[0], tmin[1]), tmin[2])
    tfar = np.minimum(np.minimum(tmax[0], tmax[1]), tmax[2])
    return tnear, tfar, tmin


def trace(scene: Scene) -> GBuffer:
    """First hit of every pixel's ray against the ground plane, boxes and ellipsoids."""
    s = scene.size
    o = scene.origin
    d = _ray_dirs(scene)
    dc = [np.ascontiguousarray(d[..., k]) for k in range(3)]  # per-axis, for fast slab tests
    inv = [1.0 / c for c in dc]
    t = np.full((s, s), np.inf)
    mat = np.full((s, s), scene.m_sky, dtype=np.int32)
    axis = np.full((s, s), 1, dtype=np.int8)  # entry axis of box hits; -1 = curved surface
    normal = np.zeros((s, s, 3))

    # Ground plane y = 0: road between the curbs, terrain beyond (mostly hidden by slabs).
    down = dc[1] < 0
    tg = np.where(down, -o[1] / np.where(down, dc[1], -1.0), np.inf)
    t[:] = tg
    xg = o[0] + tg * dc[0]
    mat[down] = np.where(np.abs(xg[down]) <= scene.road_half, scene.m_road, scene.m_ground)

    box_lo = np.array([b[0] for b in scene.boxes]).reshape(-1, 3)
    box_hi = np.array([b[1] for b in scene.boxes]).reshape(-1, 3)
    box_regions = _project_many(scene, _corners(box_lo, box_hi))
    for (lo, hi, m, alpha, apar, _), region in zip(scene.boxes, box_regions):
        if region is None:
            continue
        sl = np.s_[region[0]:region[1], region[2]:region[3]]
        tnear, tfar, tmin = _slab(lo, hi, o, [iv[sl] for iv in inv])
        tv = t[sl]
        hit = (tnear <= tfar) & (tnear > _EPS) & (tnear < tv)
        if not hit.any():
            continue
        if alpha:
            th = tnear[hit]
            p = np.stack([o[k] + th * dc[k][sl][hit] for k in range(3)], axis=-1)
            hit[hit] = _alpha_keep(alpha, apar, p)
        tv[hit] = tnear[hit]
        mat[sl][hit] = m
        av = axis[sl]
        th, t0, t1 = tnear[hit], tmin[0][hit], tmin[1][hit]
        av[hit] = np.where(th == t0, 0, np.where(th == t1, 1, 2))

    centres = np.array([e[0] for e in scene.ellipsoids]).reshape(-1, 3)
    radii = np.array([e[1] for e in scene.ellipsoids]).reshape(-1, 3)
    ell_regions = _project_many(scene, _corners(centres - radii, centres + radii))
    for (c, r, m, _), region in zip(scene.ellipsoids, ell_regions):
        if region is None:
            continue
        sl = np.s_[region[0]:region[1], region[2]:region[3]]
        dd = [dc[k][sl] / r[k] for k in range(3)]
        oc = (o - c) / r
        a = dd[0] * dd[0] + dd[1] * dd[1] + dd[2] * dd[2]
        b = dd[0] * oc[0] + dd[1] * oc[1] + dd[2] * oc[2]
        cc = float(oc @ oc) - 1.0
        disc = b * b - a * cc
        ok = disc >= 0
        th = np.where(ok, (-b - np.sqrt(np.where(ok, disc, 0))) / a, np.inf)
        tv = t[sl]
        hit = (th > _EPS) & (th < tv)
        if not hit.any():
            continue
        tv[hit] = th[hit]
        mat[sl][hit] = m
        axis[sl][hit] = -1
        p = o + th[hit][:, None] * d[sl][hit]
        n = (p - c) / (r * r)
        normal[sl][hit] = n / np.linalg.norm(n, axis=-1, keepdims=True)

    sky = ~np.isfinite(t)
    # Box (and ground) normals: the entry axis, pointing against the ray.
    for k in range(3):
        sel = axis == k
        normal[..., k][sel] = -np.sign(dc[k][sel])
    normal[sky] = 0.0
    pos = np.where(sky[..., None], 0.0, o + np.where(sky, 0.0, t)[..., None] * d)
    return GBuffer(t=t, mat=mat, normal=normal, pos=pos, dirs=d, sky=sky)


def paint_road_lines(scene: Scene, g: GBuffer) -> None:
    """Turn road pixels into road-line pixels where the markings are: colour-only difference."""
    on = g.mat == scene.m_road
    x, z = g.pos[..., 0][on], g.pos[..., 2][on]
    hw = scene.line_width / 2
    ax = np.abs(x)
    lane_edge = scene.lanes * scene.lane_width / 2
    edge = np.abs(ax - (lane_edge - (0.0 if scene.parking else 0.3))) < hw
    dash_len, period, phase = scene.dash
    dashed = np.mod(z + phase, period) < dash_len
    if scene.centre_double:
        centre = np.abs(ax - 0.15) < hw
    else:
        centre = (ax < hw) & dashed
    lane_line = np.zeros_like(edge)
    if scene.lanes == 4:
        lane_line = (np.abs(ax - scene.lane_width) < hw) & dashed
    white = edge | lane_line
    if scene.crosswalk is not None:
        z0, length = scene.crosswalk
        white |= (z > z0) & (z < z0 + length) & (ax < lane_edge - 0.3) & (np.mod(x, 1.0) < 0.5)
    new = np.where(centre, scene.m_line_centre, np.where(white, scene.m_line, scene.m_road))
    g.mat[on] = new


def _shadow(scene: Scene, g: GBuffer, sun: np.ndarray) -> np.ndarray:
    """1 where the sun is visible from the hit point, 0 in shadow (casters: all but slabs)."""
    s = scene.size
    lit = np.ones((s, s))
    inv = 1.0 / np.where(np.abs(sun) < 1e-9, 1e-9, sun)
    origin = g.pos + g.normal * 0.02  # off the surface, so a face does not shadow itself
    oc = [np.ascontiguousarray(origin[..., k]) for k in range(3)]
    reach = 1.0 / max(sun[1], 0.05)  # how far (per metre of height) a shadow reaches

    def volumes(lo: np.ndarray, hi: np.ndarray) -> list[tuple[int, int, int, int] | None]:
        # Each box swept away from the sun down to the ground: where its shadow can fall.
        c = _corners(lo.reshape(-1, 3), hi.reshape(-1, 3))
        swept = c - sun * (np.maximum(c[..., 1:2], 0) * reach)
        return _project_many(scene, np.concatenate([c, swept], 1))

    casters = [b for b in scene.boxes if b[5]]
    regions = volumes(np.array([b[0] for b in casters]), np.array([b[1] for b in casters]))
    for (lo, hi, *_), region in zip(casters, regions):
        if region is None:
            continue
        sl = np.s_[region[0]:region[1], region[2]:region[3]]
        tnear, tfar, _ = _slab(lo, hi, [x[sl] for x in oc], inv)
        lit[sl][(tnear <= tfar) & (tnear > 1e-3)] = 0.0
    casters = [e for e in scene.ellipsoids if e[3]]
    centres = np.array([e[0] for e in casters]).reshape(-1, 3)
    radii = np.array([e[1] for e in casters]).reshape(-1, 3)
    for (c, r, *_), region in zip(casters, volumes(centres - radii, centres + radii)):
        if region is None:
            continue
        sl = np.s_[region[0]:region[1], region[2]:region[3]]
        q = [(oc[k][sl] - c[k]) / r[k] for k in range(3)]
        dd = sun / r
        a = float(dd @ dd)
        b = q[0] * dd[0] + q[1] * dd[1] + q[2] * dd[2]
        cc = q[0] * q[0] + q[1] * q[1] + q[2] * q[2] - 1.0
        disc = b * b - a * cc
        lit[sl][(disc >= 0) & (-b - np.sqrt(np.maximum(disc, 0)) > 1e-3)] = 0.0
    lit[g.sky] = 1.0
    return lit


# --------------------------------------------------------------------------------------------
# materials
# --------------------------------------------------------------------------------------------
class _Noise:
    """Value noise from a random lattice (one per sample, drawn from the texture stream)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.table = rng.random(256 * 256)

    def cell(self, iu: np.ndarray, iv: np.ndarray) -> np.ndarray:
        """A random value per integer lattice cell (wrapping every 256 cells)."""
        iu, iv = iu.astype(np.int64, copy=False), iv.astype(np.int64, copy=False)
        return self.table.take(((iv & 255) << 8) | (iu & 255))

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        fu, fv = np.floor(u), np.floor(v)
        au, av = u - fu, v - fv
        au, av = au * au * (3 - 2 * au), av * av * (3 - 2 * av)
        iu, iv = fu.astype(np.int64), fv.astype(np.int64)
        a, b = self.cell(iu, iv), self.cell(iu + 1, iv)
        c, d = self.cell(iu, iv + 1), self.cell(iu + 1, iv + 1)
        return a + (b - a) * au + (c - a) * av + (a - b - c + d) * au * av

    def fbm(self, u: np.ndarray, v: np.ndarray, octaves: int = 3) -> np.ndarray:
        total, amp, norm = 0.0, 1.0, 0.0
        for k in range(octaves):
            total = total + amp * self(u * 2**k + 17.3 * k, v * 2**k + 31.7 * k)
            norm += amp
            amp *= 0.5
        return total / norm


def _surface_uv(pos: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D texture coordinates on the plane the normal mostly faces."""
    axis = np.abs(normal).argmax(-1)
    u = np.where(axis == 0, pos[:, 2], pos[:, 0])
    v = np.where(axis == 1, pos[:, 2], pos[:, 1])
    return u, v


def albedo_and_emission(scene: Scene, g: GBuffer, noise: _Noise) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel linear albedo and night-time emission from each material's procedural texture."""
    s = scene.size
    m = scene.mats
    # Sort the pixels by material kind once, so each kind is a contiguous slice.
    mat = g.mat.ravel()
    kinds = np.asarray(m.kind, dtype=np.uint8)[mat]
    order = np.argsort(kinds, kind="stable")  # radix sort on uint8
    mat, kinds = mat[order], kinds[order]
    pos, nrm = g.pos.reshape(-1, 3)[order], g.normal.reshape(-1, 3)[order]
    col, col2 = np.asarray(m.col)[mat], np.asarray(m.col2)[mat]
    par = np.asarray(m.par)[mat]
    alb = np.zeros((s * s, 3))
    emit = np.zeros((s * s, 3))
    bounds = np.searchsorted(kinds, np.arange(K_LAMP + 2))
    for kind in range(K_LAMP + 1):
        sel = slice(bounds[kind], bounds[kind + 1])
        if kind == K_SKY or sel.start == sel.stop:
            continue
        p, n = pos[sel], nrm[sel]
        c, c2, pr = col[sel], col2[sel], par[sel]
        u, v = _surface_uv(p, n)
        e = np.zeros_like(c)
        if kind == K_ASPHALT:
            f = 0.75 + 0.5 * noise.fbm(u * 3.0, v * 3.0) + 0.25 * (noise(u * 25, v * 25) - 0.5)
            a = c * (f * (0.85 + 0.3 * noise(u * 0.15, v * 0.15)))[:, None]
        elif kind == K_PAINT:
            worn = noise(u * 4.0, v * 4.0) < 0.12
            a = np.where(worn[:, None], c2 * 1.3, c * (0.9 + 0.2 * noise(u * 20, v * 20))[:, None])
        elif kind == K_PAVING:
            tile = pr[:, 0]
            fu, fv = np.mod(u / tile, 1.0), np.mod(v / tile, 1.0)
            grout = (fu < 0.05) | (fv < 0.05)
            var = 0.85 + 0.3 * noise.cell(np.floor(u / tile), np.floor(v / tile) + 97)
            a = c * np.where(grout, 0.6, var * (0.9 + 0.2 * noise(u * 12, v * 12)))[:, None]
        elif kind == K_GRASS:
            f = 0.55 + 0.9 * noise.fbm(u * 2.0, v * 2.0) * (0.7 + 0.6 * noise(u * 18, v * 18))
            a = c * f[:, None]
            a[:, 0] *= 0.8 + 0.5 * noise(u * 0.3 + 50, v * 0.3)  # dry patches
        elif kind == K_LEAVES:
            f = 0.35 + 1.3 * noise(u * 5.0, v * 5.0) * noise(u * 13 + 7, v * 13 + 3)
            a = c * (0.6 + f)[:, None]
        elif kind == K_BARK:
            a = c * (0.6 + 0.7 * noise(u * 3.0, v * 12.0))[:, None]
        elif kind == K_FACADE:
            pu, pv, off = pr[:, 0], pr[:, 1], pr[:, 2]
            fu, fv = np.mod((u + off) / pu, 1.0), np.mod(v / pv, 1.0)
            cu, cv = np.floor((u + off) / pu), np.floor(v / pv)
            window = (fu > 0.2) & (fu < 0.8) & (fv > 0.3) & (fv < 0.85) & (v > 3.0)
            window &= np.abs(n[:, 1]) < 0.5  # no windows on roofs
            glass = np.array([0.06, 0.08, 0.11]) * (0.6 + 0.9 * noise.cell(cu, cv + 11))[:, None]
            wall = c * (0.8 + 0.35 * noise.fbm(u * 1.5, v * 1.5))[:, None]
            roof = np.abs(n[:, 1]) > 0.5
            wall[roof] *= 0.5
            a = np.where(window[:, None], glass, wall)
            lit_window = window & (noise.cell(cu + 5, cv) > 0.65)
            e[lit_window] = np.array([1.0, 0.75, 0.4]) * 0.5
        elif kind == K_BLOCKS:
            bh, bw = pr[:, 0], pr[:, 1]
            row = np.floor(v / bh)
            fv = np.mod(v / bh, 1.0)
            fu = np.mod(u / bw + 0.5 * np.mod(row, 2), 1.0)
            joint = (fv < 0.07) | (fu < 0.03)
            stain = 0.75 + 0.4 * noise.fbm(u * 0.8, v * 0.8)
            blockvar = 0.9 + 0.2 * noise.cell(np.floor(u / bw + 0.5 * np.mod(row, 2)), row + 53)
            a = c * np.where(joint, 0.55, stain * blockvar)[:, None]
        elif kind == K_METAL:
            a = c * (0.85 + 0.3 * noise(u * 6, v * 6))[:, None]
        elif kind == K_LAMP:
            a = c.copy()
            e[:] = c2 * 8.0
        elif kind == K_SIGN:
            cx, cy, half, disc = pr[:, 0], pr[:, 1], pr[:, 2], pr[:, 3]
            dx, dy = (p[:, 0] - cx) / half, (p[:, 1] - cy) / half
            r = np.where(disc > 0, np.sqrt(dx * dx + dy * dy), np.maximum(np.abs(dx), np.abs(dy)))
            front = n[:, 2] < -0.5
            face = np.where((r > 0.8)[:, None], 0.85, c)
            face = np.where(((r < 0.3) & (np.abs(dy) < 0.12))[:, None], 0.05, face)
            a = np.where(front[:, None], face, 0.3)
        elif kind == K_CARPAINT:
            xc, zc, length, direction = pr[:, 0], pr[:, 1], pr[:, 2], pr[:, 3]
            a = c * (0.92 + 0.16 * noise(u * 2, v * 2))[:, None]
            y = p[:, 1]
            along = p[:, 2] - zc
            side = np.abs(n[:, 0]) > 0.5
            wheel = side & (
                ((np.abs(along) - 0.32 * length) ** 2 + (y - 0.35) ** 2) < 0.36**2
            )
            a[wheel] = 0.03
            a[y < 0.3] *= 0.4  # dark under-body trim
            end = np.abs(n[:, 2]) > 0.5
            lx = np.abs(p[:, 0] - xc)
            light = end & (lx > 0.45) & (lx < 0.8) & (y > 0.65) & (y < 0.82)
            facing_cam = n[:, 2] < 0
            rear = facing_cam == (direction > 0)
            red = light & rear
            white = light & ~rear
            a[red] = (0.5, 0.03, 0.02)
            a[white] = (0.8, 0.8, 0.75)
            e[red] = (3.0, 0.1, 0.05)
            e[white] = (6.0, 6.0, 5.0)
        elif kind == K_GLASS:
            roof = n[:, 1] > 0.5
            a = np.where(roof[:, None], c2, c * (0.7 + 0.8 * noise(u * 1.5, v * 1.5))[:, None])
        elif kind == K_CLOTH:
            a = c * (0.8 + 0.4 * noise(u * 8, v * 8))[:, None]
        elif kind == K_SKIN:
            a = c.copy()
        else:  # pragma: no cover - every kind is listed above
            a = c
        alb[sel] = a
        emit[sel] = e
    out_alb, out_emit = np.empty_like(alb), np.empty_like(emit)
    out_alb[order], out_emit[order] = alb, emit
    return np.clip(out_alb, 0.0, 1.0).reshape(s, s, 3), out_emit.reshape(s, s, 3)


# --------------------------------------------------------------------------------------------
# weather and sensors
# --------------------------------------------------------------------------------------------
@dataclass
class Weather:
    """Lighting and atmosphere of one weather, drawn from the weather stream."""

    name: str
    sun: np.ndarray
    ambient: float
    diffuse: float
    sun_colour: np.ndarray
    sky_zenith: np.ndarray
    sky_horizon: np.ndarray
    fog_beta: float  # extinction per metre
    fog_colour: np.ndarray
    exposure: float
    noise: float  # camera read noise (std, 0..1 scale)
    clouds: float  # cloud cover of the sky texture
    shadows: bool
    lights: bool
    rain: float  # streak density, 0 = dry
    lidar_drop: float  # random LiDAR dropout probability
    visibility: float  # metres, LiDAR returns beyond fade out
    event_noise: float  # background-activity rate of the event camera
    log_noise: float  # temporal noise of the log intensity (per frame)


def make_weather(key: Sequence[int], name: str) -> Weather:
    if name not in WEATHERS:
        raise ValueError(f"unknown weather {name!r}")
    rng = _rng(key, _S_WEATHER)
    u = rng.uniform
    el, az = math.radians(u(25, 65)), math.radians(u(-180, 180))
    sun = np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    w = dict(
        name=name, sun=sun, ambient=0.8, diffuse=0.25, sun_colour=np.array([1.0, 1.0, 1.0]),
        sky_zenith=np.array([0.55, 0.58, 0.62]), sky_horizon=np.array([0.8, 0.82, 0.85]),
        fog_beta=0.004, fog_colour=np.array([0.75, 0.78, 0.82]), exposure=1.0, noise=0.006,
        clouds=0.7, shadows=False, lights=False, rain=0.0, lidar_drop=0.05, visibility=1e9,
        event_noise=0.002, log_noise=0.01,
    )
    if name == "sun":
        w.update(ambient=0.35, diffuse=1.1, sun_colour=np.array([1.0, 0.95, 0.85]),
                 sky_zenith=np.array([0.12, 0.28, 0.7]), sky_horizon=np.array([0.55, 0.7, 0.9]),
                 clouds=u(0.0, 0.3), shadows=True, fog_beta=0.002)
    elif name == "cloud":
        w.update(ambient=u(0.8, 0.95), diffuse=u(0.1, 0.25), clouds=u(0.6, 1.0))
    elif name == "fog":
        visibility = u(35.0, 90.0)
        grey = u(0.6, 0.8)
        w.update(ambient=0.8, diffuse=0.1, fog_beta=3.0 / visibility, visibility=visibility,
                 fog_colour=np.array([grey, grey * 1.01, grey * 1.04]), clouds=0.0,
                 event_noise=0.002)
    elif name == "night":
        w.update(ambient=u(0.006, 0.015), diffuse=0.0, sky_zenith=np.array([0.002, 0.003, 0.008]),
                 sky_horizon=np.array([0.02, 0.02, 0.03]), exposure=u(1.5, 2.5),
                 noise=u(0.02, 0.035), clouds=0.0, lights=True, fog_beta=0.003,
                 fog_colour=np.array([0.01, 0.01, 0.015]), event_noise=u(0.015, 0.03),
                 log_noise=0.06)
    elif name == "rain":
        w.update(ambient=u(0.5, 0.65), diffuse=0.1, sky_zenith=np.array([0.35, 0.37, 0.4]),
                 sky_horizon=np.array([0.5, 0.52, 0.55]), fog_beta=u(0.008, 0.015),
                 fog_colour=np.array([0.45, 0.47, 0.5]), exposure=0.9, noise=0.01,
                 clouds=1.0, rain=u(0.6, 1.0), lidar_drop=u(0.15, 0.3),
                 visibility=u(120, 200), event_noise=0.004)
    return Weather(**w)


def _sky(g: GBuffer, w: Weather, noise: _Noise) -> np.ndarray:
    d = g.dirs[g.sky]
    el = np.clip(d[:, 1] / np.linalg.norm(d, axis=-1), 0, 1)
    t = np.sqrt(el)[:, None]
    c = w.sky_horizon * (1 - t) + w.sky_zenith * t
    if w.clouds > 0:
        # Clouds on a plane above: project the ray onto it and texture it.
        k = 1.0 / np.maximum(d[:, 1], 0.05)
        cloud = noise.fbm(d[:, 0] * k * 0.8 + 40, d[:, 2] * k * 0.8, 4)
        cover = np.clip((cloud - (1 - w.clouds) * 0.7 - 0.25) * 3, 0, 1)[:, None]
        c = c * (1 - cover) + np.clip(w.sky_horizon * 1.1, 0, 1) * cover
    if w.name == "sun":
        cosang = (d / np.linalg.norm(d, axis=-1, keepdims=True)) @ w.sun
        c = c + np.clip(cosang - 0.97, 0, None)[:, None] * 20
    return c


def _radiance(scene: Scene, g: GBuffer, w: Weather, noise: _Noise) -> np.ndarray:
    """Linear scene radiance (before the camera): lighting, atmosphere; no sensor effects."""
    alb, emit = albedo_and_emission(scene, g, noise)
    n = g.normal
    hemi = 0.55 + 0.45 * n[..., 1]  # skylight comes from above
    light = w.ambient * hemi[..., None] * np.ones(3)
    direct = np.clip(n @ w.sun, 0, None)
    if w.shadows:
        direct = direct * _shadow(scene, g, w.sun)
    light = light + (w.diffuse * direct)[..., None] * w.sun_colour
    if w.lights:
        # Street lamps: inverse-square point lights (no shadows), summed per lamp colour.
        p = [g.pos[..., k] for k in range(3)]
        nk = [n[..., k] for k in range(3)]
        irradiance: dict[tuple[float, float, float], np.ndarray] = {}
        for lamp_pos, lamp_col in scene.lamps:
            v = [lamp_pos[k] - p[k] for k in range(3)]
            dist2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2] + 1.0
            cos = np.maximum(v[0] * nk[0] + v[1] * nk[1] + v[2] * nk[2], 0) / np.sqrt(dist2)
            e = 3.0 * cos / dist2
            irradiance[lamp_col] = irradiance[lamp_col] + e if lamp_col in irradiance else e
        for lamp_col, e in irradiance.items():
            light = light + e[..., None] * np.asarray(lamp_col)
    if w.name == "rain":
        # Wet asphalt is darker; road and road line alike (they share their geometry).
        wet = np.isin(g.mat, [scene.m_road, scene.m_line, scene.m_line_centre])
        alb[wet] *= 0.6
    rad = alb * light
    if w.lights:
        rad = rad + emit
    rad[g.sky] = _sky(g, w, noise)
    rng_dist = g.t * np.linalg.norm(g.dirs, axis=-1)
    trans = np.where(g.sky, 0.0, np.exp(-w.fog_beta * np.where(g.sky, 0, rng_dist)))[..., None]
    fogged = rad * trans + w.fog_colour * (1 - trans)
    if w.name != "fog":
        fogged[g.sky] = rad[g.sky]  # haze does not replace the sky outside fog
    return fogged


def _streaks(rng: np.random.Generator, size: int, density: float):
    """Rain streak parameters: start points, direction, length, strength."""
    count = int(density * size * size / 350)
    start = rng.uniform(-0.1 * size, size, (count, 2))  # (row, col)
    angle = rng.normal(0.15, 0.05)
    length = rng.uniform(0.04, 0.1, count) * size
    strength = rng.uniform(0.08, 0.25, count)
    return start, angle, length, strength


def _streak_alpha(streaks, size: int, shift: float) -> np.ndarray:
    start, angle, length, strength = streaks
    steps = np.linspace(0, 1, max(int(0.1 * size), 2))
    rows = start[:, :1] + shift + steps * length[:, None] * math.cos(angle)
    cols = start[:, 1:] + steps * length[:, None] * math.sin(angle)
    r, c = np.round(rows).astype(int), np.round(cols).astype(int)
    ok = (r >= 0) & (r < size) & (c >= 0) & (c < size)
    weights = np.broadcast_to(strength[:, None], r.shape)[ok]
    acc = np.bincount((r[ok] * size + c[ok]), weights=weights, minlength=size * size)
    return np.clip(acc.reshape(size, size), 0, 0.6)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.2126, 0.7152, 0.0722])


def _to_uint8(lin: np.ndarray) -> np.ndarray:
    return np.round(np.clip(lin, 0, 1) ** (1 / 2.2) * 255).astype(np.uint8)


def render_rgb(lin: np.ndarray, w: Weather, failure: str, key: Sequence[int]) -> np.ndarray:
    """Camera: exposure, sensor noise and the RGB sensor failures; gamma-encoded uint8."""
    x = lin * w.exposure
    if failure == "motionblur":
        frng = _rng(key, _S_FAILURE)
        length = max(3, int(round(x.shape[1] * frng.uniform(0.04, 0.08))) | 1)
        x = ndimage.uniform_filter1d(x, length, axis=1, mode="nearest")
    elif failure == "overexposure":
        frng = _rng(key, _S_FAILURE)
        x = x * frng.uniform(4.0, 8.0) + 0.15
    elif failure == "underexposure":
        frng = _rng(key, _S_FAILURE)
        x = x * frng.uniform(0.03, 0.08)
    nrng = _rng(key, _S_NOISE)
    x = np.clip(x, 0, None) ** (1 / 2.2)
    x = x + nrng.normal(0.0, w.noise, x.shape)
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def render_hha(g: GBuffer) -> np.ndarray:
    """HHA-like: disparity (510/z), height above the road, angle of the normal with 'up'."""
    z = np.where(g.sky, np.inf, g.t)
    disp = np.clip(np.round(510.0 / z), 1, 255)
    height = np.maximum(g.pos[..., 1], 0)
    hgt = np.clip(np.round(20 + 235 * (1 - np.exp(-height / 6.0))), 0, 255)
    angle = np.degrees(np.arccos(np.clip(g.normal[..., 1], -1, 1)))
    ang = np.clip(np.round(angle * 255 / 180), 0, 255)
    hha = np.stack([disp, hgt, ang], axis=-1)
    hha[g.sky] = 0
    return hha.astype(np.uint8)


def render_depth(g: GBuffer) -> np.ndarray:
    """Plain depth along the optical axis, uint16 centimetres; 0 = no depth (sky)."""
    cm = np.where(g.sky, 0, np.clip(np.round(np.where(g.sky, 0, g.t) * 100), 1, 65535))
    return cm.astype(np.uint16)


def render_events(scene: Scene, g: GBuffer, lum: np.ndarray, w: Weather, failure: str,
                  key: Sequence[int], streaks) -> np.ndarray:
    """Event frame from the log-intensity change under a small ego-motion.

    The second frame is the first warped by the motion field of a short forward move plus a
    small rotation (near things move more, the sky only rotates); a pixel fires one event per
    contrast threshold crossed. Negative polarity is stored in the red channel, positive in
    blue (CARLA's DVS colouring), ``85 * count`` capped at 255; background 0.
    """
    rng = _rng(key, _S_EVENT)
    s = scene.size
    tz = rng.uniform(0.08, 0.25)
    rot_u, rot_v = rng.uniform(-0.6, 0.6, 2) * s / 256
    threshold = rng.uniform(*EVENT_THRESHOLD)
    c = np.arange(s) + 0.5 - s / 2
    cols, rows = np.meshgrid(c, c)
    inv_z = np.where(g.sky, 0.0, 1.0 / np.where(g.sky, 1.0, g.t))
    flow_u = cols * tz * inv_z + rot_u
    flow_v = rows * tz * inv_z + rot_v
    log0 = np.log(lum + 0.01)
    grid_r = np.arange(s)[:, None] - flow_v
    grid_c = np.arange(s)[None, :] - flow_u
    log1 = ndimage.map_coordinates(log0, [grid_r, grid_c], order=1, mode="nearest")
    if streaks is not None:
        # Rain falls between the frames: the streaks move, so they fire events.
        a0 = _streak_alpha(streaks, s, 0.0)
        a1 = _streak_alpha(streaks, s, 0.5 * streaks[2].mean())
        lin1 = np.exp(log1) - 0.01
        log0 = np.log(lum * (1 - a0) + 0.7 * a0 + 0.01)
        log1 = np.log(lin1 * (1 - a1) + 0.7 * a1 + 0.01)
    if failure == "eventlowres":
        # A sensor with 4x larger pixels: each integrates the light of a 4x4 block.
        small = max(1, s // 4)
        log0 = np.log(_area_resize(np.exp(log0), small))
        log1 = np.log(_area_resize(np.exp(log1), small))
    log0 = log0 + rng.normal(0, w.log_noise, log0.shape)
    log1 = log1 + rng.normal(0, w.log_noise, log1.shape)
    diff = log1 - log0
    count = np.floor(np.abs(diff) / threshold)
    pos = np.where(diff > 0, count, 0)
    neg = np.where(diff < 0, count, 0)
    # Background activity: spurious events of random sign (more at night).
    spurious = rng.random(diff.shape) < w.event_noise
    sign = rng.random(diff.shape) < 0.5
    pos = np.where(spurious & sign, np.maximum(pos, 1), pos)
    neg = np.where(spurious & ~sign, np.maximum(neg, 1), neg)
    out = np.zeros((*diff.shape, 3), dtype=np.uint8)
    out[..., 0] = np.clip(neg * 85, 0, 255)
    out[..., 2] = np.clip(pos * 85, 0, 255)
    return out


def _area_resize(x: np.ndarray, small: int) -> np.ndarray:
    """Box-average a square (S, S) array down to (small, small)."""
    s = x.shape[0]
    edges = np.linspace(0, s, small + 1).round().astype(int)
    rows = np.add.reduceat(x, edges[:-1], axis=0) / np.diff(edges)[:, None]
    return np.add.reduceat(rows, edges[:-1], axis=1) / np.diff(edges)[None, :]


def render_lidar(scene: Scene, g: GBuffer, w: Weather, failure: str,
                 key: Sequence[int]) -> np.ndarray:
    """LiDAR returns projected to the image: every k-th row (jittered), 0 without a return.

    Channels: R = ``1 + 254 * (1 - range / 100 m)`` (near is bright), G = intensity
    (material reflectivity times the cosine of incidence), B = ``1 + 25 * height`` (4 cm steps).
    Road and road line share their reflectivity: only colour tells them apart.
    """
    rng = _rng(key, _S_LIDAR)
    s = scene.size
    k = max(3, s // 64)
    n_beams = s // k
    rows = np.arange(n_beams) * k + k // 2 + rng.integers(-1, 2, n_beams)
    rows = np.clip(rows, 0, s - 1)
    d = g.dirs[rows]
    dn = d / np.linalg.norm(d, axis=-1, keepdims=True)
    rng_m = g.t[rows] * np.linalg.norm(d, axis=-1)
    elevation = np.degrees(np.arcsin(np.clip(dn[..., 1], -1, 1)))
    valid = ~g.sky[rows] & (rng_m < LIDAR_MAX_RANGE) & (elevation > -50) & (elevation < 12)
    valid &= rng.random(valid.shape) >= w.lidar_drop
    if w.visibility < 1e6:
        # Fog/rain scatter the beam: far returns vanish.
        valid &= rng.random(valid.shape) < np.exp(-3.0 * (rng_m / w.visibility) ** 2)
    refl = np.asarray(scene.mats.refl)[g.mat[rows]]
    cos = np.abs((g.normal[rows] * dn).sum(-1))
    intensity = refl * (0.3 + 0.7 * cos) * np.exp(-rng_m / 150.0)
    if w.rain > 0:
        intensity = intensity * 0.75
    height = g.pos[rows][..., 1]
    col_idx = np.broadcast_to(np.arange(s), valid.shape)
    row_idx = np.broadcast_to(rows[:, None], valid.shape)
    r_i, c_i = row_idx[valid], col_idx[valid]
    r_m, inten, h = rng_m[valid], intensity[valid], height[valid]
    if failure == "lidarjitter":
        frng = _rng(key, _S_FAILURE)
        amp = max(1, int(round(4 * s / 256)))
        r_i = np.clip(r_i + frng.integers(-amp, amp + 1, r_i.shape), 0, s - 1)
        c_i = np.clip(c_i + frng.integers(-amp, amp + 1, c_i.shape), 0, s - 1)
        r_m = np.clip(r_m + frng.normal(0, 0.5, r_m.shape), 0.1, LIDAR_MAX_RANGE)
    out = np.zeros((s, s, 3), dtype=np.uint8)
    out[r_i, c_i, 0] = np.clip(np.round(1 + 254 * (1 - r_m / LIDAR_MAX_RANGE)), 1, 255)
    out[r_i, c_i, 1] = np.clip(np.round(1 + 254 * inten), 1, 255)
    out[r_i, c_i, 2] = np.clip(np.round(1 + 25 * np.maximum(h, 0)), 1, 255)
    return out


def render_sample(key: Sequence[int], weather: str, failure: str = "none", size: int = 256, *,
                  road_lines: bool = True) -> dict[str, np.ndarray]:
    """Render one sample: ``rgb``, ``hha``, ``depth`` (uint16 cm), ``event``, ``lidar``, ``label``.

    ``key`` (ints, e.g. ``(seed, split id, index)``) fixes the layout and all noise; ``weather``
    and ``failure`` only change what they act on. ``road_lines=False`` leaves the markings
    unpainted (for tests: the geometry and every non-RGB sensor stay identical).
    """
    if failure != "none" and failure not in SENSOR_FAILURES:
        raise ValueError(f"unknown sensor failure {failure!r}")
    key = tuple(int(k) for k in key)
    scene = build_scene(key, size)
    w = make_weather(key, weather)
    g = trace(scene)
    if road_lines:
        paint_road_lines(scene, g)
    noise = _Noise(_rng(key, _S_TEXTURE))
    lin = _radiance(scene, g, w, noise)
    streaks = _streaks(_rng(key, _S_CAMERA), size, w.rain) if w.rain > 0 else None
    lum = _luminance(lin)
    if streaks is not None:
        a = _streak_alpha(streaks, size, 0.0)[..., None]
        lin = lin * (1 - a) + 0.7 * a
    label = np.asarray(scene.mats.cls, dtype=np.uint8)[g.mat]
    return {
        "rgb": render_rgb(lin, w, failure, key),
        "hha": render_hha(g),
        "depth": render_depth(g),
        "event": render_events(scene, g, lum, w, failure, key, streaks),
        "lidar": render_lidar(scene, g, w, failure, key),
        "label": label,
    }
