"""The results store (:mod:`.store`), its row vocabulary (:mod:`.rows`) and run provenance
(:mod:`.provenance`)."""

from mlebench.results.provenance import git_commit, package_versions
from mlebench.results.rows import BootstrapSpec, CaseCounts, CaseKey, ResultRow, case_counts, result_rows
from mlebench.results.store import (
    APPLICATION_ID,
    RESULT_COLUMNS,
    RUN_COLUMNS,
    SCHEMA_VERSION,
    ResultsStore,
    migrate,
)

__all__ = [
    "APPLICATION_ID", "RESULT_COLUMNS", "RUN_COLUMNS", "SCHEMA_VERSION", "BootstrapSpec", "CaseCounts", "CaseKey",
    "ResultRow", "ResultsStore", "case_counts", "git_commit", "migrate", "package_versions", "result_rows",
]  # fmt: skip
