"""``mlebench data check``: is a data set's layout sound before anyone trains on it?"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

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


def _flatten(paths) -> list[Path]:
    """Companion entries are paths or tuples of paths (a modality stored in several files)."""
    flat: list[Path] = []
    for entry in paths:
        flat += [Path(p) for p in entry] if isinstance(entry, (tuple, list)) else [Path(entry)]
    return flat
