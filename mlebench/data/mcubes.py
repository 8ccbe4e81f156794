"""MCubeS (Liang et al., CVPR 2022, "Multimodal Material Segmentation") as released.

Layout (``root`` is the ``multimodal_dataset`` folder)::

    <root>/polL_color/<name>.png      RGB from the left polarisation camera, 8- or 16-bit
    <root>/polL_aolp_sin/<name>.npy   sin of the angle of linear polarisation, float (H, W)
    <root>/polL_aolp_cos/<name>.npy   cos of the angle of linear polarisation, float (H, W)
    <root>/polL_dolp/<name>.npy       degree of linear polarisation, float (H, W)
    <root>/NIR_warped/<name>.png      near infrared warped to the RGB view, 8/16-bit, 1 channel
    <root>/GT/<name>.png              material ids 0..19, 255 = ignore
    <root>/list_folder/{train,val,test}.txt   one sample name per line

Names look like ``outscene1208_2_0000000150``: a scene, then a frame counter; ``meta["scene"]``
is the part before the counter (the whole name when there is no counter).

Modalities follow the reference loaders (the MCubeS release and CMNeXt's
``semseg/datasets/mcubes.py``): ``rgb`` is the colour image; ``aolp`` stacks
``[sin, cos, sin]`` as three channels; ``dolp`` and ``nir`` are repeated to three channels.
Raw values are kept as stored: uint8 for 8-bit PNGs, float32 on 0..255 for 16-bit PNGs (the
reference divides by 65535 where we rescale to the 8-bit range, see :func:`to_chw3`), float32
for the ``.npy`` arrays; an array holding NaN or infinite values (or float64 values beyond the
float32 range) is refused, naming the file. Both references drop the left ``MCUBES_LEFT_CROP``
(192) columns of every modality and of the label; so do we.

Label values are used as stored (no remapping). Anything other than 0..19 and 255 is refused:
the MCubeS evaluator silently drops such pixels, but the training loss (ignore index 255) would
fail on them, so they can only be a broken file.

Splits: each of ``train``/``val``/``test`` is read from its own list file. Quirk of the
reference: CMNeXt's MCubeS loader only knows ``train`` and ``val`` and reads ``test.txt`` for
``val``, so the numbers CMNeXt reports as "val" are on our ``test`` split. That reading is
offered explicitly as the split ``reference-val`` (``list_folder/test.txt``, recorded under that
name), so that a number compared with a published "val" says which images it used. The MCubeS release
itself lists 1208 / 384 / 408 (train / val / test) images in 42 scenes, and its loader silently
skips listed names with no image; we raise instead, when the sample is decoded. The release's
``SS``, ``SSGT4MS`` and ``NIR_warped_mask`` folders are not read (CMNeXt ignores them too).

mIoU: CMNeXt's ``Metrics.compute_iou`` sets NaN IoUs (classes absent from both prediction and
ground truth) to 0 and averages all 20 classes, the ``"deliver"`` convention, which we use since
the published MCubeS baselines we compare against come from that code. The original MCubeS
``Evaluator`` uses ``nanmean`` instead (``"present"``); the two agree whenever every class
occurs in the evaluated split.
"""

from __future__ import annotations

import re
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
from mlebench.data.io import check_label_values, read_image, read_npy, to_chw3
from mlebench.errors import DataError

MCUBES_CLASSES = (
    "asphalt", "concrete", "metal", "road_marking", "fabric", "glass", "plaster", "plastic",
    "rubber", "sand", "gravel", "ceramic", "cobblestone", "brick", "grass", "wood", "leaf",
    "water", "human", "sky",
)  # fmt: skip

MCUBES_PALETTE = (
    (44, 160, 44), (31, 119, 180), (255, 127, 14), (214, 39, 40), (140, 86, 75),
    (127, 127, 127), (188, 189, 34), (255, 152, 150), (23, 190, 207), (174, 199, 232),
    (196, 156, 148), (197, 176, 213), (247, 182, 210), (199, 199, 199), (219, 219, 141),
    (158, 218, 229), (57, 59, 121), (107, 110, 207), (156, 158, 222), (99, 121, 57),
)  # fmt: skip

# Both reference loaders slice every array with [:, 192:] (the left columns lack NIR overlap).
MCUBES_LEFT_CROP = 192

LIST_FOLDER = "list_folder"
# Splits read from another split's list, as the reference code does.
REFERENCE_SPLIT_LISTS = {"reference-val": "test"}
LABEL_FOLDER = "GT"
# modality -> folder(s) and file extension; aolp joins two files.
MCUBES_FILES: dict[str, tuple[tuple[str, ...], str]] = {
    "rgb": (("polL_color",), ".png"),
    "aolp": (("polL_aolp_sin", "polL_aolp_cos"), ".npy"),
    "dolp": (("polL_dolp",), ".npy"),
    "nir": (("NIR_warped",), ".png"),
}

MCUBES_MODALITIES = (
    ModalitySpec(
        "rgb", "RGB from the left polarisation camera (polL_color/)", normalization="imagenet"
    ),
    ModalitySpec(
        "aolp",
        "angle of linear polarisation as [sin, cos, sin] (polL_aolp_sin/, polL_aolp_cos/)",
        normalization="identity",
    ),
    ModalitySpec(
        "dolp",
        "degree of linear polarisation, repeated to 3 channels (polL_dolp/)",
        normalization="identity",
    ),
    ModalitySpec("nir", "near infrared warped to the RGB view, as 3 channels (NIR_warped/)"),
)

MCUBES_INFO = DatasetInfo(
    name="mcubes",
    classes=MCUBES_CLASSES,
    palette=MCUBES_PALETTE,
    modalities=MCUBES_MODALITIES,
    splits=("train", "val", "test", "reference-val"),
    cases=(),
    miou_convention="deliver",
    layout_markers=("polL_color", LABEL_FOLDER),
    notes=(
        f"left {MCUBES_LEFT_CROP} columns cropped as in the reference; CMNeXt's 'val' is our "
        "'test' split (its loader reads list_folder/test.txt for val)"
    ),
)

_ALLOWED_LABELS = np.array([*range(len(MCUBES_CLASSES)), IGNORE_INDEX])
# A trailing frame counter: "outscene1208_2_0000000150" -> scene "outscene1208_2".
_FRAME_SUFFIX = re.compile(r"^(?P<scene>.+)_\d{4,}$")


def mcubes_file(root: Path, folder: str, name: str, ext: str) -> Path:
    return root / folder / f"{name}{ext}"


def scene_of(name: str) -> str:
    """The scene part of a sample name, or the name itself when it has no frame counter."""
    match = _FRAME_SUFFIX.match(name)
    return match.group("scene") if match else name


def read_split_list(path: Path) -> list[str]:
    """Sample names of one list file (first token of each non-empty line)."""
    if not path.is_file():
        raise DataError(
            f"mcubes: missing split list file {path} "
            "(is the data root the 'multimodal_dataset' folder?)"
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"mcubes: cannot read split list file {path}: {exc}") from exc
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def _check_size(what: str, path: Path, shape: tuple[int, ...], size: tuple[int, int]) -> None:
    if tuple(shape[:2]) != size:
        raise DataError(
            f"{what} file {path} is {shape[0]}x{shape[1]}, but its label is {size[0]}x{size[1]}"
        )


def _read_plane(path: Path, what: str, size: tuple[int, int]) -> np.ndarray:
    """One ``(H, W)`` float32 ``.npy`` plane, checked against the label size."""
    arr = read_npy(path, what=what)
    if arr.ndim != 2:
        raise DataError(f"{what} file {path} has shape {arr.shape}; expected a 2-D (H, W) array")
    _check_size(what, path, arr.shape, size)
    return arr


def _crop(x: torch.Tensor) -> torch.Tensor:
    return x[..., MCUBES_LEFT_CROP:].contiguous()


def decode_mcubes_label(path: Path) -> torch.Tensor:
    """Read a GT PNG into an int64 ``(H, W)`` tensor of class ids / 255, *before* the crop."""
    raw = read_image(path, what="label")
    if raw.ndim != 2:
        raise DataError(
            f"label file {path} has shape {raw.shape}; expected a single-channel PNG of class ids"
        )
    check_label_values(raw, _ALLOWED_LABELS, path)
    if raw.shape[1] <= MCUBES_LEFT_CROP:
        raise DataError(
            f"label file {path} is {raw.shape[1]} pixels wide; MCubeS drops the left "
            f"{MCUBES_LEFT_CROP} columns, so images must be wider"
        )
    return torch.from_numpy(raw.astype(np.int64))


@register_dataset("mcubes", MCUBES_INFO)
class MCubeSDataset(MultiModalDataset):
    root_hint = "the MCubeS download's 'multimodal_dataset' folder"
    info = MCUBES_INFO

    def index(self) -> list[SampleRef]:
        # "reference-val": what the DELIVER/CMNeXt code evaluates as val (test.txt).
        list_name = REFERENCE_SPLIT_LISTS.get(self.split, self.split)
        list_file = self.root / LIST_FOLDER / f"{list_name}.txt"
        names = read_split_list(list_file)
        if not names:
            raise DataError(f"mcubes: split list file {list_file} names no samples")
        refs = []
        for name in names:
            paths: dict[str, Any] = {}
            for modality, (folders, ext) in MCUBES_FILES.items():
                files = tuple(mcubes_file(self.root, folder, name, ext) for folder in folders)
                # aolp keeps its (sin, cos) pair, as the base class allows.
                paths[modality] = files if len(files) > 1 else files[0]
            refs.append(
                SampleRef(
                    id=name,
                    paths=paths,
                    label=mcubes_file(self.root, LABEL_FOLDER, name, ".png"),
                    meta={
                        "id": name,
                        "scene": scene_of(name),
                        "split": self.split,
                        "weather": "none",
                        "sensor_failure": "none",
                    },
                )
            )
        return refs

    def companion_paths(self, ref: SampleRef) -> dict[str, Path]:
        """Every file of the requested modalities (aolp as two entries) and the label."""
        out: dict[str, Path] = {}
        for modality in self.modalities:
            path = ref.paths[modality]
            if isinstance(path, tuple):
                sin, cos = path
                out[f"{modality}_sin"], out[f"{modality}_cos"] = sin, cos
            else:
                out[modality] = path
        out["label"] = ref.label
        return out

    def decode(self, ref: SampleRef) -> dict[str, Any]:
        label = decode_mcubes_label(ref.label)
        size = (int(label.shape[0]), int(label.shape[1]))
        sample: dict[str, Any] = {}
        for modality in self.modalities:
            sample[modality] = _crop(self._decode_modality(modality, ref.paths[modality], size))
        sample["label"] = _crop(label)
        sample["meta"] = dict(ref.meta)
        return sample

    @staticmethod
    def _decode_modality(modality: str, path: Any, size: tuple[int, int]) -> torch.Tensor:
        """One modality as a ``(3, H, W)`` tensor at the stored (uncropped) size."""
        if modality == "aolp":
            sin_path, cos_path = path
            sin = _read_plane(sin_path, "aolp_sin", size)
            cos = _read_plane(cos_path, "aolp_cos", size)
            return torch.from_numpy(np.stack([sin, cos, sin]))
        if modality == "dolp":
            dolp = _read_plane(path, "dolp", size)
            return torch.from_numpy(np.ascontiguousarray(np.broadcast_to(dolp, (3, *dolp.shape))))
        if modality == "rgb":
            arr = read_image(path, what="rgb")
            if arr.ndim != 3 or arr.shape[2] != 3:
                got = 1 if arr.ndim == 2 else arr.shape[2]
                raise DataError(f"rgb file {path} has {got} channels; expected 3")
        else:  # nir
            arr = read_image(path, what="nir")
            if arr.ndim != 2:
                raise DataError(f"nir file {path} has {arr.shape[2]} channels; expected 1")
        _check_size(modality, path, arr.shape, size)
        return to_chw3(arr, path, what=modality)
