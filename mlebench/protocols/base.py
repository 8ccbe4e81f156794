"""Protocols expand a trained model's evaluation into cases; nothing else.

A case is (test modalities, condition, corruption). The evaluator runs all cases of a
protocol over one pass of the data; the protocol then may add summary rows (e.g. the mean
over modality subsets). A protocol is a module with a class decorated by
:func:`register_protocol`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from mlebench.corruptions import Corruption
from mlebench.data.base import DatasetInfo
from mlebench.errors import ConfigError

ALL = "all"  # the condition that selects every sample
NO_CORRUPTION = "none"


def case_label(test_modalities: str | Sequence[str], condition: str = ALL, corruption: str = NO_CORRUPTION,
               metric: str = "miou") -> str:
    """How a case, or a protocol's summary number, is named wherever one is shown: the test
    modalities joined by "-" (given as a sequence or comma-separated, as the store keeps them),
    then the condition and the corruption where they are not the defaults: ``rgb-depth | fog |
    gaussian-50@rgb``. A metric other than ``miou`` comes first, and ``*`` (a number over several
    modality sets) is left out: ``miou_avg``, ``silhouette | rgb | fog``."""
    mods = test_modalities.replace(",", "-") if isinstance(test_modalities, str) else "-".join(test_modalities)
    parts = [p for p in (mods, condition, corruption) if p not in ("*", ALL, NO_CORRUPTION)]
    if metric != "miou":
        parts.insert(0, metric)
    return " | ".join(parts)


@dataclass(frozen=True)
class EvalCase:
    test_modalities: tuple[str, ...]
    condition: str = ALL
    corruption: Corruption | None = None

    @property
    def corruption_name(self) -> str:
        return self.corruption.name if self.corruption is not None else NO_CORRUPTION

    @property
    def label(self) -> str:
        return case_label(self.test_modalities, self.condition, self.corruption_name)


@dataclass
class CaseResult:
    """What the evaluator measured for one case."""

    case: EvalCase
    miou: float
    pixel_accuracy: float
    mean_f1: float
    iou: list[float]  # per class
    samples: int
    # Sampled pixel features of the fused embedding, per class id: (features (N, C), count seen).
    # Only filled for protocols that ask for it (``Protocol.collect_pixels``).
    pixels: dict[int, Any] | None = None
    # Per-sample counts, in data-set order: the ids of the scored samples and an int64 array
    # (N, 3, K) of true positives, false positives and false negatives per class. Every
    # statistic (mIoU, intervals, paired differences) can be recomputed from them.
    sample_ids: list[str] = field(default_factory=list)
    counts: Any = None
    # The scene of each scored sample, parallel to ``sample_ids``, where the data set records
    # scenes (``meta["scene"]``); None where it does not. Intervals resample whole scenes.
    scenes: list[str] | None = None
    # (sample id, predicted label map (H, W) uint8) of the first few samples, when asked for
    predictions: list[tuple[str, Any]] | None = None


@dataclass(frozen=True)
class SummaryRow:
    """A protocol-level number (e.g. mIoU^Avg), from :meth:`Protocol.summary`.

    ``terms`` says how the value combines the cases' mIoUs: ``((case, weight), ...)`` for a
    weighted sum. With terms, the statistics layer can give the value an interval and a paired
    difference from the per-sample counts; without (e.g. a silhouette score), it cannot.
    ``test_modalities`` is ``("*",)`` for a number over several modality sets.
    """

    metric: str
    value: float
    test_modalities: tuple[str, ...] = ("*",)
    condition: str = ALL
    corruption: str = NO_CORRUPTION
    terms: tuple[tuple[EvalCase, float], ...] = ()


@dataclass(frozen=True)
class TableSpec:
    """How a protocol's stored rows pivot into a table (the report builds and renders it).

    The report hands ``prepare`` a tidy frame of the protocol's stored rows, one row per value,
    with the run's fields (``method``, ``variant``, ``dataset``, ``split``, ``train_modalities``,
    ``params_m``...) beside ``test_modalities``, ``condition``, ``corruption``, ``metric``,
    ``value`` (mIoU-type values already in percent) and the interval. ``prepare`` keeps the rows
    the table shows and adds the ``rows`` and ``columns`` fields (ordered categoricals give the
    order); the report pivots ``value`` on them. ``None`` keeps the frame as it is.
    """

    name: str
    caption: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    prepare: Callable[[Any, DatasetInfo], Any] | None = None
    #: add a "Δ vs reference" row under each method's row (the paper's Tab. VI-VII)
    delta_rows: bool = False
    #: columns whose best value is not marked (e.g. parameter counts)
    unranked_columns: tuple[str, ...] = ()
    #: the row fields that must be equal for two rows to be compared when marking the best
    #: (``None``: every row field but ``method``, i.e. methods compared like for like)
    peers: tuple[str, ...] | None = None
    decimals: int = 2
    notes: tuple[str, ...] = ()


class Protocol(ABC):
    name: str = ""
    description: str = ""
    #: pixels per class the evaluator samples from the fused embedding (0: none)
    collect_pixels: int = 0

    @abstractmethod
    def cases(self, train_modalities: Sequence[str], info: DatasetInfo) -> list[EvalCase]:
        """The evaluation cases for a model trained on ``train_modalities``."""

    def summary(self, results: Sequence[CaseResult], train_modalities: Sequence[str]) -> list[SummaryRow]:
        """Protocol-level numbers from the case results."""
        return []

    def figures(self, results: Sequence[CaseResult], train_modalities: Sequence[str]) -> dict[str, bytes]:
        """The protocol's own figures of a run (file name -> PNG bytes), stored with it."""
        return {}

    @classmethod
    def tables(cls) -> list[TableSpec]:
        """The tables this protocol's stored rows make (see :class:`TableSpec`)."""
        return []


_PROTOCOLS: dict[str, type[Protocol]] = {}


def register_protocol(name: str) -> Callable[[type[Protocol]], type[Protocol]]:
    def decorator(cls: type[Protocol]) -> type[Protocol]:
        if name in _PROTOCOLS:
            raise ValueError(f"protocol {name!r} is registered twice")
        cls.name = name
        _PROTOCOLS[name] = cls
        return cls

    return decorator


def protocol_names() -> list[str]:
    return sorted(_PROTOCOLS)


def protocol_factory(name: str) -> type[Protocol]:
    """The class registered as protocol ``name``; an unknown name is an error listing the known."""
    if name not in _PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; known: {', '.join(protocol_names())}")
    return _PROTOCOLS[name]


def get_protocol(name: str, **options: Any) -> Protocol:
    return protocol_factory(name)(**options)


def check_condition(condition: str, info: DatasetInfo) -> None:
    if condition != ALL and condition not in info.cases:
        known = ", ".join((ALL, *info.cases))
        raise ConfigError(f"unknown condition {condition!r} for {info.name}; known: {known}")


def canonical(modalities: Sequence[str], order: Sequence[str]) -> tuple[str, ...]:
    """``modalities`` in the training order (so 'depth,rgb' and 'rgb,depth' are one case)."""
    return tuple(m for m in order if m in modalities)


def as_mapping(results: Sequence[CaseResult]) -> Mapping[EvalCase, CaseResult]:
    return {r.case: r for r in results}


def modality_letters(info: DatasetInfo) -> dict[str, str]:
    """Short names as the paper writes them (R, D, E, L...): the first letter, upper case; where two
    modalities share a letter the first one (in the data set's order) keeps it, e.g. DELIVER's
    ``depth`` is D and ``depth_raw`` stays ``depth_raw``."""
    letters: dict[str, str] = {}
    for name in info.modality_names:
        letter = name[0].upper()
        letters[name] = letter if letter not in letters.values() else name
    return letters


def subset_label(modalities: str | Sequence[str], info: DatasetInfo) -> str:
    """``"rgb,depth"`` -> ``"R-D"`` in the data set's order."""
    if isinstance(modalities, str):
        modalities = modalities.split(",")
    letters = modality_letters(info)
    return "-".join(letters.get(m, m) for m in canonical(modalities, info.modality_names) or modalities)


def ordered(values: Any, order: Sequence[str]) -> Any:
    """``values`` (a pandas Series) as an ordered categorical in ``order`` (unknown values last)."""
    import pandas as pd

    categories = list(dict.fromkeys([*order, *sorted(set(values) - set(order))]))
    return pd.Categorical(values, categories=categories, ordered=True)


def all_subset_labels(info: DatasetInfo) -> list[str]:
    """Labels of every non-empty subset of the data set's modalities, smallest first."""
    import itertools

    names = info.modality_names
    subsets = [s for r in range(1, len(names) + 1) for s in itertools.combinations(names, r)]
    return [subset_label(s, info) for s in subsets]
