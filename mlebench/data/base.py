"""The data-set interface shared by every loader, and the registry behind ``load_dataset``.

A loader indexes a layout on disk into :class:`SampleRef` records (paths only, cheap) and
decodes one record into a sample on ``__getitem__``. A sample is a plain dict so that torch's
default collate batches it::

    {
        "rgb": uint8 tensor (3, H, W),      # one entry per requested modality, raw values
        "depth": uint8 tensor (3, H, W),    # as stored (0..255 for PNG modalities)
        "label": int64 tensor (H, W),       # class ids 0..K-1, 255 = ignore
        "meta": {"id": ..., "scene": ..., "split": ..., "weather": ..., "sensor_failure": ...},
    }

Normalisation is deliberately *not* part of loading (see :mod:`mlebench.data.transforms`):
corruptions such as the paper's Gaussian noise act on the raw 0..255 values first.

Every loader's ``decode`` is checked by the base class: a decoded sample whose tensors hold NaN
or infinite values is refused with a :class:`~mlebench.errors.DataError` naming the sample's
file (see :meth:`MultiModalDataset.__init_subclass__`), so NaN inputs can never reach a stored
mIoU and ``mlebench data check`` lists such files as unreadable; a loader gets this without
doing anything.
"""

from __future__ import annotations

import functools
import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mlebench.data.io import require_finite
from mlebench.errors import ConfigError, DataError

IGNORE_INDEX = 255


@dataclass(frozen=True)
class ModalitySpec:
    """How one modality is stored and normalised.

    ``normalization`` is one of ``"imagenet"`` (``/255`` then ImageNet mean/std, used for RGB),
    ``"unit"`` (``/255``, the reference code's treatment of depth, event, LiDAR, NIR) or
    ``"identity"`` (values already in a small float range, e.g. MCubeS AoLP/DoLP).
    """

    name: str
    description: str
    normalization: str = "unit"
    dense: bool = True
    channels: int = 3


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a data set: classes, palette, modalities, splits and cases."""

    name: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    modalities: tuple[ModalitySpec, ...]
    splits: tuple[str, ...]
    cases: tuple[str, ...] = ()
    # What a run uses when no modalities are named; all modalities when empty.
    default_modalities: tuple[str, ...] = ()
    ignore_index: int = IGNORE_INDEX
    # Which mIoU convention the data set's own papers use (see mlebench.metrics).
    miou_convention: str = "deliver"
    notes: str = ""
    # Entries (files or folders) whose presence together marks a folder as the data set's root,
    # so that no command writes into a data set it was not pointed at (mlebench.outputs).
    layout_markers: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    @property
    def defaults(self) -> tuple[str, ...]:
        return self.default_modalities or self.modality_names

    def modality(self, name: str) -> ModalitySpec:
        for spec in self.modalities:
            if spec.name == name:
                return spec
        raise ConfigError(
            f"unknown modality {name!r} for data set {self.name!r}; "
            f"known: {', '.join(self.modality_names)}"
        )

    def palette_array(self) -> np.ndarray:
        """``(K, 3)`` uint8 palette, for colourising labels."""
        return np.asarray(self.palette, dtype=np.uint8)


@dataclass
class SampleRef:
    """Where one sample's files are; everything needed to decode it later."""

    id: str
    paths: dict[str, Path]  # modality name -> file (or tuple of files joined by the loader)
    label: Path
    meta: dict[str, str] = field(default_factory=dict)


class MultiModalDataset(Dataset, ABC):
    """Base class of the loaders. Subclasses set ``info`` and implement ``index`` and ``decode``."""

    info: ClassVar[DatasetInfo]
    #: what --data-root must point at, for the error when it is missing
    root_hint: ClassVar[str] = "the data set's folder"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap a loader's own ``decode`` so that every decoded sample is checked for NaN and
        infinite values (:meth:`check_finite`), whoever calls it."""
        super().__init_subclass__(**kwargs)
        decode = cls.__dict__.get("decode")
        if decode is None or getattr(decode, "_checks_finite", False) or getattr(decode, "__isabstractmethod__", False):
            return

        @functools.wraps(decode)
        def checked_decode(self: "MultiModalDataset", ref: SampleRef) -> dict[str, Any]:
            sample = decode(self, ref)
            self.check_finite(ref, sample)
            return sample

        checked_decode._checks_finite = True  # type: ignore[attr-defined]
        cls.decode = checked_decode  # type: ignore[method-assign]

    def __init__(
        self,
        root: str | Path | None,
        split: str,
        modalities: Sequence[str] | None = None,
        case: str | None = None,
    ) -> None:
        if root is None:
            raise DataError(f"{self.info.name}: --data-root is required ({self.root_hint})")
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise DataError(f"{self.info.name}: data root {self.root} does not exist")
        if not self.root.is_dir():
            raise DataError(f"{self.info.name}: data root {self.root} is not a directory")
        if split not in self.info.splits:
            raise ConfigError(
                f"{self.info.name}: unknown split {split!r}; known: {', '.join(self.info.splits)}"
            )
        if modalities is None:
            modalities = self.info.defaults
        modalities = tuple(modalities)
        if not modalities:
            raise ConfigError(f"{self.info.name}: at least one modality is needed")
        for name in modalities:
            self.info.modality(name)  # raises on unknown names
        if len(set(modalities)) != len(modalities):
            raise ConfigError(f"{self.info.name}: modality listed twice in {list(modalities)}")
        if case is not None and case not in self.info.cases:
            known = ", ".join(self.info.cases) or "(this data set has no cases)"
            raise ConfigError(f"{self.info.name}: unknown case {case!r}; known: {known}")
        self.split = split
        self.modalities = modalities
        self.case = case
        self.refs: list[SampleRef] = [r for r in self.index() if self._matches_case(r)]
        if not self.refs:
            where = f"split {split!r}" + (f", case {case!r}" if case else "")
            raise DataError(f"{self.info.name}: no samples found under {self.root} for {where}")

    # --- to implement -------------------------------------------------------------------
    @abstractmethod
    def index(self) -> list[SampleRef]:
        """All samples of ``self.split`` (before case filtering), sorted deterministically."""

    @abstractmethod
    def decode(self, ref: SampleRef) -> dict[str, Any]:
        """Read one sample's files into the sample dict described in the module docstring."""

    def companion_paths(self, ref: SampleRef) -> dict[str, Path]:
        """Every file the requested modalities of a sample need, and its label."""
        return {**{m: ref.paths[m] for m in self.modalities}, "label": ref.label}

    def identity(self) -> dict[str, Any]:
        """What this split is, for telling runs on other data apart (``compare`` pairs images by
        id; two synthetic sets of different seeds share every id): the data set, its root, the
        split, the number of samples and ``fingerprint``, a hash of every sample's id and the
        names (relative to the root) and sizes of its files. Files are stat-ed, not read."""
        digest = hashlib.sha256()
        for ref in sorted(self.refs, key=lambda r: r.id):
            digest.update(ref.id.encode() + b"\0")
            for name, entry in sorted(self.companion_paths(ref).items()):
                for path in entry if isinstance(entry, (tuple, list)) else (entry,):
                    path = Path(path)
                    try:
                        size = path.stat().st_size
                        where = path.relative_to(self.root).as_posix()
                    except (OSError, ValueError):
                        size, where = -1, path.name
                    digest.update(f"{name}:{where}:{size}\0".encode())
        return {"dataset": self.info.name, "root": str(Path(self.root).expanduser().resolve()), "split": self.split,
                "samples": len(self.refs), "fingerprint": digest.hexdigest()[:16]}

    def check_finite(self, ref: SampleRef, sample: dict[str, Any]) -> None:
        """Raise :class:`DataError` naming the file(s) if a tensor of ``sample`` holds NaN or
        infinite values (only floating-point tensors are scanned)."""
        for key, value in sample.items():
            if not isinstance(value, (torch.Tensor, np.ndarray)):
                continue
            source = ref.label if key == "label" else ref.paths.get(key)
            if isinstance(source, (tuple, list)):
                where = " / ".join(str(p) for p in source)
            elif source is not None:
                where = str(source)
            else:
                where = f"for sample {ref.id}"
            require_finite(value, where, key)

    # --- shared ---------------------------------------------------------------------------
    def _matches_case(self, ref: SampleRef) -> bool:
        if self.case is None:
            return True
        return self.case in ref.meta.values()

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.decode(self.refs[index])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"modalities={list(self.modalities)}, case={self.case!r}, n={len(self)})"
        )


DatasetFactory = Callable[..., MultiModalDataset]

_DATASETS: dict[str, DatasetFactory] = {}
_INFOS: dict[str, DatasetInfo] = {}


def register_dataset(name: str, info: DatasetInfo) -> Callable[[DatasetFactory], DatasetFactory]:
    """Register a loader (a class or a factory function) under ``name``."""

    def decorator(factory: DatasetFactory) -> DatasetFactory:
        if name in _DATASETS:
            raise ValueError(f"data set {name!r} is registered twice")
        _DATASETS[name] = factory
        _INFOS[name] = info
        return factory

    return decorator


def dataset_names() -> list[str]:
    return sorted(_DATASETS)


def _lookup(name: str) -> str:
    if name not in _DATASETS:
        raise ConfigError(f"unknown data set {name!r}; known: {', '.join(dataset_names())}")
    return name


def data_root_containing(path: str | Path) -> Path | None:
    """The root of a data set (in any registered layout, by its ``layout_markers``) that is
    ``path`` or one of its parents, or None."""
    path = Path(path).expanduser().absolute()
    markers = [info.layout_markers for info in _INFOS.values() if info.layout_markers]

    def exists(p: Path) -> bool:
        try:
            return p.exists()
        except OSError:  # a name too long, a loop: not a data set
            return False

    for folder in (path, *path.parents):
        if any(all(exists(folder / m) for m in group) for group in markers):
            return folder
    return None


def dataset_info(name: str) -> DatasetInfo:
    """The static :class:`DatasetInfo` of a registered data set."""
    return _INFOS[_lookup(name)]


def load_dataset(
    name: str,
    root: str | Path | None,
    split: str,
    modalities: Sequence[str] | None = None,
    case: str | None = None,
) -> MultiModalDataset:
    """Open data set ``name`` at ``root`` (``None`` only for the synthetic default)."""
    factory = _DATASETS[_lookup(name)]
    return factory(root=root, split=split, modalities=modalities, case=case)
