"""``mlebench check``: the CI regression gate on mIoU.

A short benchmark on the embedded synthetic set on CPU — every registered method (so a new
method is gated without editing anything), trained briefly and evaluated under the
``missing-modality`` and ``full`` protocols (:mod:`~mlebench.gate.measure`) — compared with a
committed baseline of several training seeds (:mod:`~mlebench.gate.baseline`) by a rule with a
family-wise false-alarm rate (:mod:`~mlebench.gate.rule`).
"""

from __future__ import annotations

from itertools import groupby
from typing import Callable, Sequence

from mlebench.errors import ConfigError
from mlebench.gate.baseline import (DEFAULT_BASELINE, Baseline, BaselineCase, read_baseline,
                                    update_baseline, write_baseline)
from mlebench.gate.measure import CaseMeasure, GateSetup, Measures, measure
from mlebench.gate.rule import (FAMILY_ALPHA, GateResult, allowed_drop, compare_with_baseline, format_gate,
                                prediction_bound)
from mlebench.results.provenance import package_versions

DEFAULT_CHECK_SEED = 0

__all__ = [
    "DEFAULT_BASELINE", "DEFAULT_CHECK_SEED", "FAMILY_ALPHA", "Baseline", "BaselineCase",
    "CaseMeasure", "GateResult", "GateSetup", "Measures", "allowed_drop", "compare_with_baseline", "drop_methods",
    "format_gate", "measure", "prediction_bound", "read_baseline", "run_gate", "update_baseline", "write_baseline",
]  # fmt: skip


def run_gate(baseline: Baseline, methods: Sequence[str], registered: Sequence[str], seed: int = DEFAULT_CHECK_SEED,
             echo: Callable[[str], None] = lambda _msg: None) -> GateResult:
    """Measure ``methods`` once with training seed ``seed``, each with the setup its baseline
    recorded, and compare. ``seed`` must be new to every checked method's baseline."""
    for method in methods:
        record = baseline.methods.get(method)
        if record is not None and seed in record.seeds:
            raise ConfigError(f"--seed {seed}: the baseline of {method} was measured with seeds "
                              f"{list(record.seeds)}; the checked run must be a new one, so pick a seed not "
                              "among them")
    now: Measures = {}
    with_baseline = [m for m in methods if m in baseline.methods]
    by_setup = sorted(with_baseline, key=lambda m: repr(baseline.methods[m].setup))
    for _, group in groupby(by_setup, key=lambda m: repr(baseline.methods[m].setup)):
        names = list(group)
        now.update(measure(names, seed, baseline.methods[names[0]].setup, echo=echo))
    order = {m: i for i, m in enumerate(methods)}
    now = dict(sorted(now.items(), key=lambda kv: (order[kv[0][0]], kv[0][1:])))
    return compare_with_baseline(now, baseline, methods, registered, versions=package_versions(("sam2",)))


def drop_methods(baseline: Baseline, methods: Sequence[str]) -> Baseline:
    """The baseline without ``methods`` (``check --drop``); each must be in it."""
    unknown = [m for m in methods if m not in baseline.methods]
    if unknown:
        raise ConfigError(f"--drop: the baseline {baseline.path} has no method {', '.join(unknown)}; it has "
                          f"{', '.join(baseline.methods)}")
    return Baseline(baseline.path, {m: r for m, r in baseline.methods.items() if m not in methods},
                    [c for c in baseline.cases if c.method not in methods])
