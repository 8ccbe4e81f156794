"""Is a data set sound before anyone trains on it? ``mlebench data check`` (counts per split and
case, missing and undecodable files) and :func:`check_eval_files`, the cheap check of an
evaluation split every job runs before it trains (headers and file tails only)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tqdm import tqdm

from mlebench.data.base import dataset_info, load_dataset
from mlebench.errors import DataError


@dataclass
class CheckReport:
    dataset: str
    root: str
    modalities: list[str]
    # split -> {"total": n, <case>: n, ...}
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # companion files that do not exist
    unreadable: list[str] = field(default_factory=list)  # files that exist but do not decode
    problems: list[str] = field(default_factory=list)  # e.g. an empty split

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unreadable or self.problems)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "ok": self.ok}, indent=2)

    def format_text(self, limit: int = 20) -> str:
        lines = [f"{self.dataset} at {self.root} (modalities: {', '.join(self.modalities)})"]
        for split, counts in self.counts.items():
            cases = ", ".join(f"{c} {n}" for c, n in counts.items() if c != "total" and n)
            lines.append(f"  {split}: {counts['total']} samples" + (f" ({cases})" if cases else ""))
        for title, items in (
            ("problems", self.problems),
            ("missing files", self.missing),
            ("unreadable files", self.unreadable),
        ):
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines += [f"  {item}" for item in items[:limit]]
                if len(items) > limit:
                    lines.append(f"  ... and {len(items) - limit} more (see --json)")
        lines.append("layout OK" if self.ok else "layout has problems")
        return "\n".join(lines)


def check_dataset(
    name: str,
    root: str | Path | None,
    modalities: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    decode: bool = True,
    progress: bool = False,
) -> CheckReport:
    """Count samples per split and case, list missing companions and undecodable files.

    A missing or unusable root raises :class:`DataError` (nothing to report on); everything
    else is collected into the report so one run shows every problem.
    """
    info = dataset_info(name)
    if root is not None and not Path(root).expanduser().is_dir():
        raise DataError(f"{name}: data root {root} does not exist or is not a directory")
    modalities = list(modalities) if modalities else list(info.defaults)
    report = CheckReport(dataset=name, root=str(root), modalities=modalities)
    for split in splits or info.splits:
        try:
            dataset = load_dataset(name, root, split, modalities)
        except DataError as exc:
            report.problems.append(f"split {split!r}: {exc}")
            report.counts[split] = {"total": 0}
            continue
        report.root = str(dataset.root)
        counts = {"total": len(dataset), **{case: 0 for case in info.cases}}
        refs = tqdm(dataset.refs, desc=f"{name}/{split}", disable=not progress, leave=False)
        for ref in refs:
            for case in info.cases:
                counts[case] += case in ref.meta.values()
            missing = [p for p in _flatten(dataset.companion_paths(ref).values()) if not p.is_file()]
            report.missing += [f"{p} (sample {ref.id})" for p in missing]
            if decode and not missing:
                try:
                    dataset.decode(ref)
                except DataError as exc:
                    report.unreadable.append(str(exc))
        report.counts[split] = counts
    return report


def _flat_paths(entry: Any) -> list[Path]:
    """A companion entry is a path or a tuple of paths (a modality stored in several files)."""
    return [Path(p) for p in entry] if isinstance(entry, (tuple, list)) else [Path(entry)]


def _flatten(entries: Any) -> list[Path]:
    return [path for entry in entries for path in _flat_paths(entry)]


# File suffixes whose header gives the image size without decoding pixels.
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _inspect_file(path: Path) -> tuple[str | None, tuple[int, ...] | None]:
    """(problem, (height, width)) of one file from its header and tail only; no pixels decoded."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "is missing", None
    except OSError as exc:
        return f"cannot be read ({exc.strerror})", None
    if not path.is_file():
        return "is not a file", None
    if size == 0:
        return "is empty (0 bytes)", None
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            shape = np.load(path, mmap_mode="r").shape  # the header only
        except Exception as exc:  # noqa: BLE001  (any failure: not a readable array)
            return f"is not a readable .npy array ({exc})", None
        return None, tuple(shape[:2]) if len(shape) >= 2 else None
    if suffix not in _IMAGE_SUFFIXES:
        return None, None
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            fmt = img.format
    except Exception as exc:  # noqa: BLE001  (PIL raises several types for broken headers)
        return f"is not a readable image ({type(exc).__name__}: {exc})", None
    if fmt == "PNG":
        with open(path, "rb") as fh:
            fh.seek(max(0, size - len(_PNG_END)))
            if fh.read() != _PNG_END:
                return "is truncated (no PNG end marker)", None
    return None, (height, width)


def check_eval_files(dataset: Any, limit: int = 20) -> None:
    """Every file of the evaluation split exists, has a readable header, a PNG is complete, and
    each modality has its label's size where the loader requires it; cheap (headers and file
    tails, no pixels decoded), so that a broken file is found before training, not after.

    A modality whose size differs from its label's is decoded once per (modality, size, label
    size) combination by the loader itself, which decides: some layouts store smaller frames on
    purpose (DELIVER's low-resolution events) and the loader resizes them."""
    problems: list[str] = []
    accepted: set[tuple[Any, ...]] = set()
    for ref in dataset.refs:
        paths = dataset.companion_paths(ref)
        sizes: dict[str, tuple[int, ...]] = {}
        broken = False
        for name, entry in paths.items():
            for path in _flat_paths(entry):
                problem, size = _inspect_file(path)
                if problem is not None:
                    problems.append(f"{name} file {path} {problem}")
                    broken = True
                elif size is not None:
                    sizes.setdefault(name, size)
        label = sizes.get("label")
        odd = tuple(sorted((m, s) for m, s in sizes.items() if m != "label" and label is not None and s != label))
        if broken or not odd or (odd, label) in accepted or len(problems) >= limit:
            continue
        try:
            dataset.decode(ref)  # the loader decides whether these sizes are fine
            accepted.add((odd, label))
        except DataError as exc:
            problems.append(str(exc))
    if problems:
        command = f"mlebench data check --dataset {dataset.info.name} --data-root {dataset.root} --split {dataset.split}"
        more = f" (and {len(problems) - 1} more: `{command}` lists them)" if len(problems) > 1 else ""
        raise DataError(f"evaluation split {dataset.split!r} of {dataset.info.name} at {dataset.root}: "
                        f"{problems[0]}{more}; found before anything ran, nothing was written")
