"""How values are encoded in the results store: times, modality lists, NaN as NULL, result rows
and per-sample count arrays (int32, zlib)."""

from __future__ import annotations

import json
import math
import zlib
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np

from mlebench.results.rows import ResultRow


def iso(moment: datetime) -> str:
    """A time as the store keeps it: ISO-8601 in UTC with microseconds (sorts as it reads)."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def join_modalities(modalities: Sequence[str], what: str) -> str:
    if isinstance(modalities, str) or not all(isinstance(m, str) for m in modalities):
        raise TypeError(f"{what} must be a sequence of modality names, got {modalities!r}")
    return ",".join(modalities)


def _nullable(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def result_record(run_id: str, row: ResultRow, position: int) -> dict[str, Any]:
    """The ``results`` row of ``row``, the ``position``-th row its run writes."""
    if not isinstance(row, ResultRow):
        raise TypeError(f"result rows must be ResultRow, got {type(row).__name__}")
    terms = None
    if row.terms:
        terms = json.dumps([[",".join(k.test_modalities), k.condition, k.corruption, w] for k, w in row.terms])
    return {
        "run_id": run_id,
        "protocol": row.protocol,
        "test_modalities": join_modalities(row.test_modalities, "test_modalities"),
        "condition": row.condition,
        "corruption": row.corruption,
        "metric": row.metric,
        "class": row.class_name,
        "value": _nullable(row.value),
        "ci_low": _nullable(row.ci_low),
        "ci_high": _nullable(row.ci_high),
        "ci_unit": row.ci_unit or None,
        "terms": terms,
        "position": position,
    }


def pack(array: np.ndarray) -> bytes:
    return zlib.compress(np.ascontiguousarray(array, dtype="<i4").tobytes(), 6)


def unpack(blob: bytes, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(zlib.decompress(blob), dtype="<i4").reshape(shape).astype(np.int64)
