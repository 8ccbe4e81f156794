"""The results store (:mod:`.store`, on the back ends of :mod:`.backends`), its row vocabulary
(:mod:`.rows`) and run provenance (:mod:`.provenance`)."""

from mlebench.results.provenance import git_commit, package_versions
from mlebench.results.rows import BootstrapSpec, CaseCounts, CaseKey, ResultRow, case_counts, result_rows
from mlebench.results.schema import APPLICATION_ID, RESULT_COLUMNS, RUN_COLUMNS, SCHEMA_VERSION
from mlebench.results.store import ResultsStore, migrate, open_store_for_reading
from mlebench.results.target import StoreTarget, parse_target

__all__ = [
    "APPLICATION_ID", "RESULT_COLUMNS", "RUN_COLUMNS", "SCHEMA_VERSION", "BootstrapSpec", "CaseCounts", "CaseKey",
    "ResultRow", "ResultsStore", "StoreTarget", "case_counts", "git_commit", "migrate", "open_store_for_reading",
    "package_versions", "parse_target", "result_rows",
]  # fmt: skip
