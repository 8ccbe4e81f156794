"""Evaluation protocols; importing this package registers them."""

from mlebench.protocols.base import (
    ALL,
    NO_CORRUPTION,
    CaseResult,
    EvalCase,
    Protocol,
    SummaryRow,
    TableSpec,
    case_label,
    get_protocol,
    protocol_factory,
    protocol_names,
    register_protocol,
)

from mlebench.protocols import conditions, full, missing_modality, noise, tsne  # noqa: E402,F401  isort: skip

__all__ = [
    "ALL", "NO_CORRUPTION", "CaseResult", "EvalCase", "Protocol", "SummaryRow", "TableSpec", "case_label", "get_protocol", "protocol_factory",
    "protocol_names",
    "register_protocol",
]  # fmt: skip
