"""The results store (:mod:`.store`, on the back ends of :mod:`.backends`), its row vocabulary
(:mod:`.rows`) and run provenance (:mod:`.provenance`).

The names below load on first use (PEP 562), so that a light part — :mod:`.target`, which the
command line uses to check ``--results`` — does not import the store, torch and the migrations."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "git_commit": "provenance", "package_versions": "provenance",
    "BootstrapSpec": "rows", "CaseCounts": "rows", "CaseKey": "rows", "ResultRow": "rows", "case_counts": "rows",
    "result_rows": "rows",
    "APPLICATION_ID": "schema", "RESULT_COLUMNS": "schema", "RUN_COLUMNS": "schema", "SCHEMA_VERSION": "schema",
    "ResultsStore": "store", "migrate": "store", "open_store_for_reading": "store",
    "StoreTarget": "target", "parse_target": "target",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mlebench.results' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mlebench.results.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
