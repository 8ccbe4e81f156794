"""MUSES (Brödermann et al., ECCV 2024) with LiDAR and events projected by the official SDK.

Layout (the download unzipped into one folder, plus the SDK's projections)::

    <root>/frame_camera/<split>/<weather>/<daytime>/<name>_frame_camera.png
    <root>/gt_semantic/<split>/<weather>/<daytime>/<name>_gt_labelTrainIds.png
    <root>/projected_to_rgb/lidar/<split>/<weather>/<daytime>/<name>_lidar.{npz,npy,png}
    <root>/projected_to_rgb/event_camera/<split>/<weather>/<daytime>/
        <name>_event_camera.{npz,npy,png}

``split`` is train / val / test, ``weather`` clear / fog / rain / snow, ``daytime`` day / night,
and names look like ``REC0006_frame_040219``: a recording, then a frame. ``meta["scene"]`` is
the recording (``REC0006``; the whole name where it has no ``REC`` prefix), so that bootstrap
intervals resample whole recordings, whose frames are related. The download ships raw LiDAR (``.bin``) and event
(``.h5``) files only; ``projected_to_rgb/`` is what the SDK's ``scripts/project_sensors_to_rgb.py
--lidar --event_camera`` writes (it swaps ``lidar/...bin`` / ``event_camera/...h5`` for
``projected_to_rgb/<same path>.<ext>``; ``.npz`` by default). When several forms exist the
loader takes ``.npz``, then ``.npy``, then ``.png``. The test split has no public labels: its
samples are listed, and decoding one raises :class:`DataError` naming the missing label file.

What the SDK stores, and what the loader returns (every modality ``(3, H, W)``):

``frame``
    The RGB frame camera, uint8 as stored.
``lidar``
    The SDK's float32 ``(H, W, 3)`` image: channel 0 the range in metres (points closer than
    1 m are dropped, so 0 means "no return"), 1 the raw intensity, 2 the height ``z`` in metres
    in the LiDAR frame (negative below the sensor). Its ``.png`` form is uint16 holding
    ``(value + 100) * 150`` (decoded back as ``v / 150 - 100``, 1/150 m resolution). Both are
    mapped to float32 on 0..255 so that noise on raw 0..255 values means the same here as for
    the other data sets, keeping 0 for "no return" in every channel:
    range ``clip(r, 0, 255)`` (1 unit = 1 m; the sensor reaches ~200 m), intensity
    ``clip(i, 0, 255)``, height ``clip(128 + 4 z, 1, 255)`` where ``r > 0`` (0.25 m per unit,
    -31.75..+31.75 m) and 0 elsewhere.
``event``
    The SDK's uint8 ``(H, W, 3)`` image of events accumulated over the last 30 ms: channel 0
    the number of positive events per pixel, 1 the negative ones, 2 zero. Counts are kept as
    they are (they already lie on 0..255), as float32, clipped to 255 for other array types.

``.npz`` files hold the image under ``arr_0`` (the SDK calls ``np.savez_compressed(file,
image)``); a ``.npz`` without it is refused, and so is a projection holding NaN or infinite
values (naming the file). The SDK writes ``.png`` projections with ``cv2.imwrite``, i.e.
channels in BGR order, so a PNG's channels are reversed on reading (the
SDK's own readers use ``cv2.imread``, which does the same); a 4th (alpha) channel is dropped.
PNGs are decoded with torchvision because Pillow keeps only 8 of the 16 bits of a 16-bit RGB
PNG. A projection rendered at another size than the frame (the SDK's ``--target_width/height``)
is resized to the label size with nearest neighbour: interpolating would blend point values
with the empty pixels around them. A frame whose size differs from its label is refused.

Labels are the 19 Cityscapes train ids 0..18 with 255 = ignore, used as stored; any other
value is refused. Cases are the four weathers and the two daytimes.

mIoU: MLE-SAM's MUSES dataset (mmseg-based) calls its metric with ``nan_to_num=0`` and
averages all 19 classes, i.e. the CMNeXt/DELIVER convention ``"deliver"`` used here. CAFuser
(detectron2's ``SemSegEvaluator``) averages only the classes present in the ground truth; the
two agree whenever every class occurs in the evaluated subset.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlebench.data.base import (
    IGNORE_INDEX,
    DatasetInfo,
    ModalitySpec,
    MultiModalDataset,
    SampleRef,
    register_dataset,
)
from mlebench.data.io import (
    check_label_values,
    read_image,
    read_npy,
    require_finite,
    resize_nearest,
    to_chw3,
)
from mlebench.errors import DataError

MUSES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

# The Cityscapes palette, in train-id order.
MUSES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

WEATHERS = ("clear", "fog", "rain", "snow")
DAYTIMES = ("day", "night")

FRAME_FOLDER, FRAME_SUFFIX = "frame_camera", "_frame_camera.png"
LABEL_FOLDER, LABEL_SUFFIX = "gt_semantic", "_gt_labelTrainIds.png"
PROJECTION_FOLDER = "projected_to_rgb"
# modality -> sub-folder of projected_to_rgb/ and file-name suffix (the SDK's sensor names)
PROJECTION_FILES: dict[str, tuple[str, str]] = {
    "event": ("event_camera", "_event_camera"),
    "lidar": ("lidar", "_lidar"),
}
PROJECTION_EXTENSIONS = (".npz", ".npy", ".png")  # order of preference
NPZ_KEY = "arr_0"

# The SDK's PNG encoding of LiDAR (and radar): uint16 = (value + shift) * scale.
SDK_PNG_SHIFT = 100.0
SDK_PNG_SCALE = 150.0
# Our 0..255 mapping of the LiDAR height channel: 128 + 4 * z, occupied pixels kept >= 1.
LIDAR_HEIGHT_OFFSET = 128.0
LIDAR_HEIGHT_PER_METRE = 4.0

MUSES_MODALITIES = (
    ModalitySpec(
        "frame", "RGB frame camera (frame_camera/)", normalization="imagenet"
    ),
    ModalitySpec(
        "event",
        "event camera projected to the frame: positive / negative counts over 30 ms, 0 "
        "(projected_to_rgb/event_camera/)",
        dense=False,
    ),
    ModalitySpec(
        "lidar",
        "LiDAR projected to the frame: range (m), intensity, 128 + 4 * height (m), 0 = no "
        "return (projected_to_rgb/lidar/)",
        dense=False,
    ),
)

MUSES_INFO = DatasetInfo(
    name="muses",
    classes=MUSES_CLASSES,
    palette=MUSES_PALETTE,
    modalities=MUSES_MODALITIES,
    splits=("train", "val", "test"),
    cases=WEATHERS + DAYTIMES,
    default_modalities=("frame", "event", "lidar"),
    miou_convention="deliver",
    layout_markers=(FRAME_FOLDER, LABEL_FOLDER),
    notes=(
        "event/lidar read from the SDK's projected_to_rgb/ output (run "
        "scripts/project_sensors_to_rgb.py --lidar --event_camera first); test labels are "
        "not public"
    ),
)

_ALLOWED_LABELS = np.array([*range(len(MUSES_CLASSES)), IGNORE_INDEX])


_RECORDING = re.compile(r"^(?P<recording>REC\d+)_")


def recording_of(name: str) -> str:
    """The recording a frame belongs to: "REC0006_frame_040219" -> "REC0006" (else the name)."""
    match = _RECORDING.match(name)
    return match.group("recording") if match else name


def frame_file(root: Path, split: str, weather: str, daytime: str, name: str) -> Path:
    return root / FRAME_FOLDER / split / weather / daytime / f"{name}{FRAME_SUFFIX}"


def label_file(root: Path, split: str, weather: str, daytime: str, name: str) -> Path:
    return root / LABEL_FOLDER / split / weather / daytime / f"{name}{LABEL_SUFFIX}"


def projection_candidates(
    root: Path, modality: str, split: str, weather: str, daytime: str, name: str
) -> list[Path]:
    """The files a projected modality may live in, in order of preference."""
    folder, suffix = PROJECTION_FILES[modality]
    base = root / PROJECTION_FOLDER / folder / split / weather / daytime
    return [base / f"{name}{suffix}{ext}" for ext in PROJECTION_EXTENSIONS]


def projection_candidates_of(path: Path) -> list[Path]:
    """All extensions of the projection file ``path`` (same stem), in order of preference."""
    stem = path.with_suffix("")
    return [stem.with_suffix(ext) for ext in PROJECTION_EXTENSIONS]


def _first_existing(candidates: list[Path]) -> Path:
    """The first candidate on disk, else the preferred one (so the error names a real target)."""
    for path in candidates:
        if path.is_file():
            return path
    return candidates[0]


# --- reading the SDK's projections -------------------------------------------------------------
def read_npz_image(path: Path, what: str, key: str = NPZ_KEY) -> np.ndarray:
    """The numeric array stored under ``key`` in a ``.npz`` archive (no pickles)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing {what} file: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {what} file {path}: {exc}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{what} file {path} is a plain .npy array, not a .npz archive")
    with archive:
        if key not in archive.files:
            found = ", ".join(archive.files) or "none"
            raise DataError(
                f"{what} file {path} has no array {key!r} (the key the MUSES SDK writes); "
                f"found: {found}"
            )
        try:
            arr = archive[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"cannot read {what} file {path}: {exc}") from exc
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{what} file {path} holds {arr.dtype}, not numbers")
    require_finite(arr, path, what)
    return arr


def _sdk_png_channels(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    """BGR(A) as written by ``cv2.imwrite`` -> the SDK's channel order, alpha dropped."""
    channels = arr.shape[2]
    if channels not in (3, 4):
        raise DataError(
            f"{what} file {path} has {channels} channel(s); expected 3 (or 4), as the MUSES "
            "SDK writes projections"
        )
    return arr[:, :, 2::-1]


def _check_sdk_array(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DataError(
            f"{what} file {path} has shape {arr.shape}; expected (H, W, 3) as the MUSES SDK writes"
        )
    arr = arr.astype(np.float32)
    require_finite(arr, path, what)  # float64 beyond float32's range
    return arr


def read_sdk_projection(path: Path, modality: str) -> np.ndarray:
    """The SDK's ``(H, W, 3)`` float32 image of ``modality`` from a .npz, .npy or .png file."""
    path = Path(path)
    if path.suffix == ".npz":
        arr = read_npz_image(path, what=modality)
    elif path.suffix == ".npy":
        arr = read_npy(path, what=modality)
    elif path.suffix == ".png":
        raw = read_image(path, what=modality)  # 16-bit colour PNGs at full precision
        if raw.ndim == 2:
            raw = raw[:, :, None]
        arr = _sdk_png_channels(raw, path, modality).astype(np.float32)
        if modality == "lidar":
            if raw.dtype != np.uint16:
                raise DataError(
                    f"lidar file {path} is an 8-bit PNG; the MUSES SDK writes LiDAR PNGs as "
                    "16-bit (value + 100) * 150"
                )
            arr = arr / np.float32(SDK_PNG_SCALE) - np.float32(SDK_PNG_SHIFT)
    else:
        raise DataError(f"{modality} file {path}: unsupported extension (.npz, .npy or .png)")
    return _check_sdk_array(arr, path, modality)


def lidar_to_raw(sdk: np.ndarray) -> torch.Tensor:
    """SDK LiDAR image ``(H, W, 3)`` [range, intensity, z] -> float32 ``(3, H, W)`` on 0..255."""
    rng, intensity, height = sdk[:, :, 0], sdk[:, :, 1], sdk[:, :, 2]
    occupied = rng > 0  # the SDK drops points closer than 1 m, so 0 is "no return"
    height_code = np.clip(LIDAR_HEIGHT_OFFSET + LIDAR_HEIGHT_PER_METRE * height, 1.0, 255.0)
    out = np.stack(
        [
            np.clip(rng, 0.0, 255.0),
            np.clip(intensity, 0.0, 255.0),
            np.where(occupied, height_code, 0.0),
        ]
    )
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def event_to_raw(sdk: np.ndarray) -> torch.Tensor:
    """SDK event image ``(H, W, 3)`` [positive, negative, 0] counts -> float32 ``(3, H, W)``."""
    out = np.clip(sdk, 0.0, 255.0).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def decode_muses_label(path: Path) -> torch.Tensor:
    """Read a ``*_gt_labelTrainIds.png`` into an int64 ``(H, W)`` tensor of train ids / 255."""
    raw = read_image(path, what="label")
    if raw.ndim != 2:
        raise DataError(
            f"label file {path} has shape {raw.shape}; expected a single-channel PNG of train ids"
        )
    check_label_values(raw, _ALLOWED_LABELS, path)
    return torch.from_numpy(raw.astype(np.int64))


@register_dataset("muses", MUSES_INFO)
class MusesDataset(MultiModalDataset):
    root_hint = "the unzipped MUSES folder"
    info = MUSES_INFO

    def index(self) -> list[SampleRef]:
        refs = []
        for weather in WEATHERS:
            for daytime in DAYTIMES:
                folder = self.root / FRAME_FOLDER / self.split / weather / daytime
                for image in sorted(folder.glob(f"*{FRAME_SUFFIX}")):
                    name = image.name[: -len(FRAME_SUFFIX)]
                    where = (self.split, weather, daytime, name)
                    paths = {"frame": image}
                    for modality in PROJECTION_FILES:
                        candidates = projection_candidates(self.root, modality, *where)
                        paths[modality] = _first_existing(candidates)
                    sample_id = f"{weather}/{daytime}/{name}"
                    refs.append(
                        SampleRef(
                            id=sample_id,
                            paths=paths,
                            label=label_file(self.root, *where),
                            meta={
                                "id": sample_id,
                                "scene": recording_of(name),
                                "split": self.split,
                                "weather": weather,
                                "daytime": daytime,
                                "sensor_failure": "none",
                            },
                        )
                    )
        return refs

    def decode(self, ref: SampleRef) -> dict[str, Any]:
        if self.split == "test" and not ref.label.is_file():
            raise DataError(
                f"missing label file: {ref.label} (MUSES test labels are not public; "
                "the benchmark server scores test predictions)"
            )
        label = decode_muses_label(ref.label)
        size = tuple(label.shape)
        sample: dict[str, Any] = {}
        for modality in self.modalities:
            path = ref.paths[modality]
            if modality == "frame":
                x = to_chw3(read_image(path, what="frame"), path, what="frame")
                if tuple(x.shape[-2:]) != size:
                    raise DataError(
                        f"frame file {path} is {x.shape[-2]}x{x.shape[-1]}, "
                        f"but its label is {size[0]}x{size[1]}"
                    )
            else:
                if not path.is_file():
                    others = ", ".join(
                        p.name for p in projection_candidates_of(path) if p != path
                    )
                    raise DataError(
                        f"missing {modality} file: {path} (nor {others}); run the MUSES SDK's "
                        f"scripts/project_sensors_to_rgb.py to create projected_to_rgb/"
                    )
                sdk = read_sdk_projection(path, modality)
                x = lidar_to_raw(sdk) if modality == "lidar" else event_to_raw(sdk)
                # Projections may be rendered at another resolution than the frame.
                x = resize_nearest(x, size)
            sample[modality] = x
        sample["label"] = label
        sample["meta"] = dict(ref.meta)
        return sample
