"""Reading image and array files with errors that name the file.

The reference loaders crash deep inside ``torchvision.io`` or ``cv2`` (or silently get
``None``) on a missing or truncated file; here every failure is a :class:`DataError` that
says which file and why.

Values must be finite: a NaN or infinity in an input turns into NaN logits and then into a
meaningless but plausible-looking mIoU, so :func:`require_finite` refuses them naming the file.
:func:`read_npy` applies it to every array it reads, and the data-set base class
(:class:`mlebench.data.base.MultiModalDataset`) applies it to every decoded sample, so a new
loader gets the check without asking for it.
"""

from __future__ import annotations

from pathlib import Path

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from mlebench.errors import DataError


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_color16_png(path: Path) -> bool:
    """True for a 16-bit-per-channel colour PNG, which Pillow silently reduces to 8 bits."""
    with open(path, "rb") as f:
        head = f.read(26)
    # IHDR starts at byte 8; byte 24 is the bit depth, 25 the colour type (2 RGB, 6 RGBA).
    return (
        len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR"
        and head[24] == 16 and head[25] in (2, 6)
    )  # fmt: skip


def _read_color16_png(path: Path, what: str) -> np.ndarray:
    # torchvision keeps all 16 bits. Its image codecs are deprecated since 0.29 but still
    # present; the warning would otherwise repeat for every sample.
    from torchvision.io import ImageReadMode, decode_png

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            data = torch.from_numpy(np.frombuffer(path.read_bytes(), dtype=np.uint8).copy())
            chw = decode_png(data, mode=ImageReadMode.UNCHANGED)
        except (OSError, RuntimeError, ValueError) as exc:
            raise DataError(f"cannot read {what} file {path}: {exc}") from exc
    return chw.permute(1, 2, 0).numpy().astype(np.uint16, copy=False)


def read_image(path: Path, what: str = "image") -> np.ndarray:
    """Decode an image file into ``(H, W)`` or ``(H, W, C)`` uint8 / uint16 array.

    16-bit PNGs (grey or colour) come back as uint16 at full precision; everything else as
    uint8.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing {what} file: {path}")
    if _is_color16_png(path):
        return _read_color16_png(path, what)
    try:
        with Image.open(path) as img:
            img.load()  # force full decode so truncation is caught here
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                return np.asarray(img, dtype=np.uint16).copy()
            if img.mode == "I":
                arr = np.asarray(img)
                if arr.min() < 0 or arr.max() > 65535:
                    raise DataError(f"{what} file {path} holds 32-bit values outside 0..65535")
                return arr.astype(np.uint16)
            # "P" keeps its palette indices (how palettised label files are meant to be read).
            if img.mode not in ("L", "RGB", "RGBA", "LA", "P"):
                img = img.convert("RGB")
            return np.asarray(img).copy()
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read {what} file {path}: {exc}") from exc


def to_chw3(arr: np.ndarray, path: Path, what: str = "image") -> torch.Tensor:
    """Apply the reference channel rules: 1 channel -> repeated to 3, 4 -> first 3, 3 kept.

    Returns a ``(3, H, W)`` uint8 tensor; a 16-bit image becomes float32 rescaled to the
    0..255 range, so that every PNG modality's raw values share one scale (the corruptions
    add noise on 0..255 values, as the paper does).
    """
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise DataError(f"{what} file {path} has unexpected shape {arr.shape}")
    channels = arr.shape[2]
    if channels == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif channels == 4:
        arr = arr[:, :, :3]
    elif channels != 3:
        raise DataError(
            f"{what} file {path} has {channels} channels; expected 1, 3 or 4"
        )
    if arr.dtype == np.uint16:
        arr = arr.astype(np.float32) * np.float32(255.0 / 65535.0)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def require_finite(values: np.ndarray | torch.Tensor, path: object, what: str) -> None:
    """Raise :class:`DataError` if ``values`` holds NaN or infinite values, naming ``path``.

    ``path`` is the file (or a description of the files) the values came from. Integer arrays
    cannot hold either and pass without being scanned.
    """
    if isinstance(values, torch.Tensor):
        if not (values.is_floating_point() or values.is_complex()):
            return
        finite = torch.isfinite(values)
        if bool(finite.all()):
            return
        bad = (~finite).nonzero()[0].tolist()
        n_nan = int(torch.isnan(values).sum())
        n_bad = int((~finite).sum())
        total = values.numel()
    else:
        values = np.asarray(values)
        if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.complexfloating)):
            return
        finite = np.isfinite(values)
        if finite.all():
            return
        bad = [int(i) for i in np.argwhere(~finite)[0]]
        n_nan = int(np.isnan(values).sum())
        n_bad = int((~finite).sum())
        total = values.size
    where = f"first at index {tuple(bad)}" if len(bad) != 1 else f"first at index {bad[0]}"
    raise DataError(
        f"{what} file {path} holds NaN or infinite values ({n_nan} NaN and {n_bad - n_nan} "
        f"infinite of {total}; {where})"
    )


def read_npy(path: Path, what: str = "array") -> np.ndarray:
    """Load a ``.npy`` array (never pickled objects) as float32; NaN or infinity is refused."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing {what} file: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {what} file {path}: {exc}") from exc
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{what} file {path} holds {arr.dtype}, not numbers")
    require_finite(arr, path, what)
    if arr.dtype == np.float32:
        return arr
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        raise DataError(f"{what} file {path} holds values beyond the float32 range (|x| > 3.4e38)")
    return out


def resize_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a ``(C, H, W)`` tensor of any dtype to ``size`` with nearest neighbour."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = F.interpolate(x[None].float(), size=size, mode="nearest")[0]
    return out.to(x.dtype)


def check_label_values(label: np.ndarray, allowed: np.ndarray, path: Path) -> None:
    """Raise if ``label`` holds a value outside ``allowed`` (naming the file and values)."""
    present = np.unique(label)
    bad = np.setdiff1d(present, allowed)
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10])
        more = "" if bad.size <= 10 else f" (+{bad.size - 10} more)"
        raise DataError(f"label file {path} holds values outside the classes and 255: {shown}{more}")
