"""DELIVER (Zhang et al., CVPR 2023) as released and as its reference code reads it.

Layout::

    <root>/{img,hha,depth,event,lidar,semantic}/{cloud,fog,night,rain,sun}/{train,val,test}/
        <scene>/<id>_{rgb,depth,event,lidar,semantic}_front.png

``hha/`` and ``depth/`` both use the ``_depth`` suffix. The reference loader feeds the HHA
encoding as "depth"; we follow it (modality ``depth``) and expose the plain depth maps as
``depth_raw``. The label is the red channel of the semantic PNG: stored ``1..25`` become class
ids ``0..24``; ``0`` (unlabelled) and ``255`` become the ignore index 255. Sensor-failure cases
are found in the sample's path (relative to the root), as the reference ``case in path`` test.
"""

from __future__ import annotations

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
from mlebench.data.io import check_label_values, read_image, resize_nearest, to_chw3
from mlebench.errors import DataError

DELIVER_CLASSES = (
    "Building", "Fence", "Other", "Pedestrian", "Pole", "RoadLine", "Road", "SideWalk",
    "Vegetation", "Cars", "Wall", "TrafficSign", "Sky", "Ground", "Bridge", "RailTrack",
    "GroundRail", "TrafficLight", "Static", "Dynamic", "Water", "Terrain", "TwoWheeler", "Bus",
    "Truck",
)  # fmt: skip

DELIVER_PALETTE = (
    (70, 70, 70), (100, 40, 40), (55, 90, 80), (220, 20, 60), (153, 153, 153),
    (157, 234, 50), (128, 64, 128), (244, 35, 232), (107, 142, 35), (0, 0, 142),
    (102, 102, 156), (220, 220, 0), (70, 130, 180), (81, 0, 81), (150, 100, 100),
    (230, 150, 140), (180, 165, 180), (250, 170, 30), (110, 190, 160), (170, 120, 50),
    (45, 60, 150), (145, 170, 100), (0, 0, 230), (0, 60, 100), (0, 0, 70),
)  # fmt: skip

WEATHERS = ("cloud", "fog", "night", "rain", "sun")
SENSOR_FAILURES = ("motionblur", "overexposure", "underexposure", "lidarjitter", "eventlowres")

# modality -> (top-level folder, file-name suffix)
DELIVER_FILES: dict[str, tuple[str, str]] = {
    "rgb": ("img", "rgb"),
    "depth": ("hha", "depth"),
    "depth_raw": ("depth", "depth"),
    "event": ("event", "event"),
    "lidar": ("lidar", "lidar"),
}
LABEL_FILES = ("semantic", "semantic")

DELIVER_MODALITIES = (
    ModalitySpec("rgb", "RGB camera (img/)", normalization="imagenet"),
    ModalitySpec("depth", "depth as HHA encoding (hha/), the reference code's 'depth'"),
    ModalitySpec("depth_raw", "plain depth maps (depth/)"),
    ModalitySpec("event", "event camera frames, resized to the RGB size (nearest)", dense=False),
    ModalitySpec("lidar", "LiDAR returns projected to the image plane", dense=False),
)

DELIVER_INFO = DatasetInfo(
    name="deliver",
    classes=DELIVER_CLASSES,
    palette=DELIVER_PALETTE,
    modalities=DELIVER_MODALITIES,
    splits=("train", "val", "test"),
    cases=WEATHERS + SENSOR_FAILURES,
    default_modalities=("rgb", "depth", "event", "lidar"),
    miou_convention="deliver",
    layout_markers=("img", "semantic"),
)

# Stored label values the loader accepts: 0 (unlabelled), 1..25, 255.
_ALLOWED_RAW_LABELS = np.array([0, *range(1, len(DELIVER_CLASSES) + 1), 255])
# Stored value -> class id; 0 and 255 -> ignore (the reference's `label[label==255]=0; label-=1`).
_LABEL_LUT = np.full(256, IGNORE_INDEX, dtype=np.int64)
_LABEL_LUT[1 : len(DELIVER_CLASSES) + 1] = np.arange(len(DELIVER_CLASSES))


def deliver_file(root: Path, modality: str, weather: str, split: str, scene: str, frame: str) -> Path:
    """Path of one modality's file (``modality`` may also be ``"label"``)."""
    folder, suffix = LABEL_FILES if modality == "label" else DELIVER_FILES[modality]
    return root / folder / weather / split / scene / f"{frame}_{suffix}_front.png"


def encode_deliver_label(class_ids: np.ndarray) -> np.ndarray:
    """Inverse of the loader's mapping: class ids 0..24 -> stored 1..25, ignore -> 0."""
    stored = np.zeros(class_ids.shape, dtype=np.uint8)
    valid = class_ids != IGNORE_INDEX
    stored[valid] = class_ids[valid].astype(np.uint8) + 1
    return stored


def decode_deliver_label(path: Path) -> torch.Tensor:
    """Read a semantic PNG into an int64 ``(H, W)`` tensor of class ids / 255."""
    raw = read_image(path, what="label")
    if raw.ndim == 3:
        raw = raw[:, :, 0]
    check_label_values(raw, _ALLOWED_RAW_LABELS, path)
    return torch.from_numpy(_LABEL_LUT[raw.astype(np.int64)])


def sensor_failure_of(relative_path: str) -> str:
    """The sensor-failure case named in a path, or ``"none"``."""
    for failure in SENSOR_FAILURES:
        if failure in relative_path:
            return failure
    return "none"


@register_dataset("deliver", DELIVER_INFO)
class DeliverDataset(MultiModalDataset):
    root_hint = "the DELIVER download's folder"
    info = DELIVER_INFO

    def index(self) -> list[SampleRef]:
        image_folder, image_suffix = DELIVER_FILES["rgb"]
        pattern = f"*/{self.split}/*/*_{image_suffix}_front.png"
        refs = []
        for image in sorted((self.root / image_folder).glob(pattern)):
            scene_dir = image.parent
            scene, weather = scene_dir.name, scene_dir.parent.parent.name
            frame = image.name[: -len(f"_{image_suffix}_front.png")]
            paths = {
                m: deliver_file(self.root, m, weather, self.split, scene, frame)
                for m in DELIVER_FILES
            }
            relative = str(image.relative_to(self.root))
            refs.append(
                SampleRef(
                    id=f"{weather}/{scene}/{frame}",
                    paths=paths,
                    label=deliver_file(self.root, "label", weather, self.split, scene, frame),
                    meta={
                        "id": f"{weather}/{scene}/{frame}",
                        "scene": scene,
                        "split": self.split,
                        "weather": weather,
                        "sensor_failure": sensor_failure_of(relative),
                    },
                )
            )
        return refs

    def decode(self, ref: SampleRef) -> dict[str, Any]:
        label = decode_deliver_label(ref.label)
        size = tuple(label.shape)
        sample: dict[str, Any] = {}
        for modality in self.modalities:
            path = ref.paths[modality]
            x = to_chw3(read_image(path, what=modality), path, what=modality)
            if modality == "event":
                # DELIVER's event-low-resolution case stores smaller event frames.
                x = resize_nearest(x, size)
            elif tuple(x.shape[-2:]) != size:
                raise DataError(
                    f"{modality} file {path} is {x.shape[-2]}x{x.shape[-1]}, "
                    f"but its label is {size[0]}x{size[1]}"
                )
            sample[modality] = x
        sample["label"] = label
        sample["meta"] = dict(ref.meta)
        return sample
