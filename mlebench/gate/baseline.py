"""The gate's committed baseline (``baselines/ci/synthetic.json``): what it holds, how it is
measured, read and written.

Format 2 keeps the raw measurements, never a derived tolerance, so that the decision rule
(:mod:`mlebench.gate.rule`) is computed from them and cannot drift from them::

    {"format": 2,
     "methods": {NAME: {"commit", "created_at", "versions", "setup", "seeds",
                        "thread_check": {"seed": S, "threads": T}}},
     "cases": [{"method", "protocol", "case", "metric",
                "seeds": {"1": 18.2, "2": null, ...},   # percent; null: that seed gave no value
                "other_threads": 18.3 | null}]}         # seed S again with T threads

Provenance is per method, so ``check --update --methods X`` re-measures X and leaves every
other method's cases, commit, versions and setup as they were.
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from mlebench.errors import ConfigError
from mlebench.fsutil import atomic_path
from mlebench.gate.measure import GateSetup, Key, Measures, measure
from mlebench.results.provenance import package_versions

DEFAULT_BASELINE = Path(__file__).resolve().parents[2] / "baselines" / "ci" / "synthetic.json"
BASELINE_FORMAT = 2
#: Packages whose version the check compares with the baseline's (a warning, not a failure).
COMPARED_PACKAGES = ("torch", "numpy", "sam2")
MIN_SEEDS = 2


@dataclasses.dataclass(frozen=True)
class BaselineCase:
    method: str
    protocol: str
    case: str
    metric: str
    seeds: dict[int, float | None]
    other_threads: float | None

    @property
    def key(self) -> Key:
        return (self.method, self.protocol, self.case, self.metric)

    @property
    def values(self) -> list[float]:
        """The seeds that have a value (what ``n`` counts)."""
        return [v for v in self.seeds.values() if v is not None]

    def label(self) -> str:
        return f"{self.method} {self.protocol} {self.case} {self.metric}"


@dataclasses.dataclass(frozen=True)
class MethodRecord:
    commit: str | None
    created_at: str
    versions: dict[str, str]
    setup: GateSetup
    seeds: tuple[int, ...]
    thread_seed: int
    other_threads: int


@dataclasses.dataclass(frozen=True)
class Baseline:
    path: Path
    methods: dict[str, MethodRecord]
    cases: list[BaselineCase]

    def cases_of(self, method: str) -> list[BaselineCase]:
        return [c for c in self.cases if c.method == method]


# --- measuring -------------------------------------------------------------------------------
def _value(measures: Measures, key: Key) -> float | None:
    got = measures.get(key)
    return got.value if got is not None and math.isfinite(got.value) else None


def measure_methods(methods: Sequence[str], seeds: Sequence[int], setup: GateSetup, commit: str | None,
                    echo: Callable[[str], None] = print) -> tuple[dict[str, MethodRecord], list[BaselineCase]]:
    """Measure ``methods`` over ``seeds``, and the first seed again at another thread count."""
    if len(seeds) < MIN_SEEDS:
        raise ConfigError(f"--seeds: a baseline needs at least {MIN_SEEDS} training seeds to measure a spread, "
                          f"got {list(seeds)}")
    runs = {seed: measure(methods, seed, setup, echo=echo) for seed in seeds}
    thread_seed, other = seeds[0], setup.other_threads
    threaded = measure(methods, thread_seed, setup, threads=other, echo=echo)
    keys = sorted(set().union(*runs.values()))
    cases = [BaselineCase(*key, seeds={s: _value(runs[s], key) for s in seeds},
                          other_threads=_value(threaded, key)) for key in keys]
    for method in methods:
        if not any(c.method == method for c in cases):
            raise ConfigError(f"--update: method {method} gave no mIoU values; nothing was written")
    thin = [c for c in cases if len(c.values) < MIN_SEEDS]
    if thin:
        shown = "; ".join(f"{c.label()} ({len(c.values)} of {len(seeds)} seeds)" for c in thin[:3])
        raise ConfigError(f"--update: {len(thin)} case(s) have a value for fewer than {MIN_SEEDS} seeds, so no "
                          f"spread can be measured: {shown}; nothing was written")
    record = MethodRecord(commit=commit, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          versions=package_versions(("sam2",)), setup=setup, seeds=tuple(seeds),
                          thread_seed=thread_seed, other_threads=other)
    return {m: record for m in methods}, cases


def update_baseline(path: Path, methods: Sequence[str], seeds: Sequence[int], commit: str | None,
                    keep_others: bool, echo: Callable[[str], None] = print) -> Baseline:
    """Re-measure ``methods`` and write the baseline; ``keep_others``: every other method already
    in the file keeps its cases and provenance (``check --update --methods X``)."""
    old = read_baseline(path) if keep_others and path.exists() else None
    records, cases = measure_methods(methods, seeds, GateSetup(), commit, echo=echo)
    if old is not None:
        records = {**{m: r for m, r in old.methods.items() if m not in methods}, **records}
        cases = [c for c in old.cases if c.method not in methods] + cases
    fresh = Baseline(path, dict(sorted(records.items())), sorted(cases, key=lambda c: c.key))
    write_baseline(path, fresh)
    return fresh


# --- writing and reading ---------------------------------------------------------------------
def to_json(baseline: Baseline) -> dict[str, Any]:
    return {
        "format": BASELINE_FORMAT,
        "rule": "see mlebench/gate/rule.py and docs/benchmark.md (the CI gate); values are mIoU in percent",
        "methods": {name: {"commit": r.commit, "created_at": r.created_at, "versions": r.versions,
                           "setup": dataclasses.asdict(r.setup), "seeds": list(r.seeds),
                           "thread_check": {"seed": r.thread_seed, "threads": r.other_threads}}
                    for name, r in baseline.methods.items()},
        "cases": [{"method": c.method, "protocol": c.protocol, "case": c.case, "metric": c.metric,
                   "seeds": {str(s): v for s, v in c.seeds.items()}, "other_threads": c.other_threads}
                  for c in baseline.cases],
    }  # fmt: skip


def write_baseline(path: Path, baseline: Baseline) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_json(baseline), indent=1, allow_nan=False) + "\n")


def _number(value: Any, where: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} is {value!r}, not a finite number; re-measure with `mlebench check --update`")
    return float(value)


def read_baseline(path: Path) -> Baseline:
    """Read and validate a baseline: every number finite, every case with at least two valued
    seeds of its method, nothing duplicated; any other file is one line naming what is wrong."""
    if not path.is_file():
        raise ConfigError(f"baseline {path} does not exist; create it with `mlebench check --update --baseline {path}`")
    try:
        data = json.loads(path.read_text())  # NaN and Infinity parse, and are refused where they stand
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read baseline {path}: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"baseline {path} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise ConfigError(f"{path} is not an mlebench CI baseline of format {BASELINE_FORMAT} (format {found!r}); "
                          "re-measure with `mlebench check --update`")
    if not isinstance(data.get("methods"), dict) or not isinstance(data.get("cases"), list):
        raise ConfigError(f"baseline {path}: needs a 'methods' mapping and a 'cases' list")
    methods = {name: _read_record(path, name, record) for name, record in data["methods"].items()}
    cases, seen = [], set()
    for i, raw in enumerate(data["cases"]):
        case = _read_case(path, i, raw, methods)
        if case.key in seen:
            raise ConfigError(f"baseline {path}: {case.label()} appears twice")
        seen.add(case.key)
        cases.append(case)
    for name in methods:
        if not any(c.method == name for c in cases):
            raise ConfigError(f"baseline {path}: method {name} has no cases")
    return Baseline(path, methods, cases)


def _read_record(path: Path, name: str, record: Any) -> MethodRecord:
    where = f"baseline {path}: method {name}"
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: its record is not a mapping")
    missing = {"setup", "seeds", "thread_check", "versions"} - set(record)
    if missing:
        raise ConfigError(f"{where}: lacks {', '.join(sorted(missing))}")
    seeds = record["seeds"]
    if (not isinstance(seeds, list) or len(seeds) < MIN_SEEDS or len(set(map(str, seeds))) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise ConfigError(f"{where}: seeds {seeds!r} are not {MIN_SEEDS} or more distinct integers")
    thread = record["thread_check"]
    if not isinstance(thread, dict) or thread.get("seed") not in seeds or not isinstance(thread.get("threads"), int):
        raise ConfigError(f"{where}: thread_check {thread!r} needs one of its seeds and a thread count")
    if not isinstance(record["versions"], dict):
        raise ConfigError(f"{where}: versions is not a mapping")
    return MethodRecord(commit=record.get("commit"), created_at=str(record.get("created_at", "")),
                        versions={str(k): str(v) for k, v in record["versions"].items()},
                        setup=GateSetup.from_record(record["setup"] if isinstance(record["setup"], dict) else {}, where),
                        seeds=tuple(seeds), thread_seed=thread["seed"], other_threads=thread["threads"])


def _read_case(path: Path, i: int, raw: Any, methods: dict[str, MethodRecord]) -> BaselineCase:
    if not isinstance(raw, dict):
        raise ConfigError(f"baseline {path}: case {i} is not a mapping")
    missing = {"method", "protocol", "case", "metric", "seeds"} - set(raw)
    if missing:
        raise ConfigError(f"baseline {path}: case {i} lacks {', '.join(sorted(missing))}")
    where = f"baseline {path}: {raw['method']} {raw['protocol']} {raw['case']} {raw['metric']}"
    record = methods.get(raw["method"])
    if record is None:
        raise ConfigError(f"{where}: method {raw['method']} has no record under 'methods'")
    if not isinstance(raw["seeds"], dict):
        raise ConfigError(f"{where}: seeds is not a mapping of seed to value")
    known = {str(s) for s in record.seeds}
    stray = sorted(set(raw["seeds"]) - known)
    if stray:
        raise ConfigError(f"{where}: seed(s) {', '.join(stray)} are not among the method's seeds {list(record.seeds)}")
    seeds = {int(s): _number(v, f"{where}: seed {s}", optional=True) for s, v in raw["seeds"].items()}
    case = BaselineCase(raw["method"], raw["protocol"], raw["case"], raw["metric"], seeds,
                        _number(raw.get("other_threads"), f"{where}: other_threads", optional=True))
    if len(case.values) < MIN_SEEDS:
        raise ConfigError(f"{where}: has a value for {len(case.values)} seed(s); at least {MIN_SEEDS} are needed "
                          "to measure a spread; re-measure with `mlebench check --update`")
    return case
