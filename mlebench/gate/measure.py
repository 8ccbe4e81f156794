"""``mlebench check``: the CI regression gate on mIoU.

A short fixed-seed benchmark on the embedded synthetic set on CPU — every registered method
(so a new method is gated without editing anything), trained briefly on all four modalities and
evaluated under the ``missing-modality`` protocol (15 subsets and their mean) and the ``full``
protocol — compared case by case with a committed baseline (``baselines/ci/synthetic.json``).

The tolerance is derived from measured noise, not guessed. ``--update`` trains every method
with ``n`` training seeds (default 4) and records, per case, the mean ``m`` and standard
deviation ``s`` over seeds, the 95% bootstrap interval of the seed-0 run, and ``d``: how much the
seed-0 run moves when run with 1 thread instead of the gate's thread count. The check runs seed
0 once and fails a case when

    now < m - max(t(0.95, n - 1) * s * sqrt(1 + 1/n), d, floor)

i.e. when the new run falls below the one-sided 95% prediction bound of one more training run
of the same recipe (the spread a harmless change such as reordered floating-point sums could
cause), or below the thread-count difference where that is larger. ``floor`` (0.05 points)
only keeps a case whose seeds happen to agree exactly from failing on rounding. A case above
``m + allowed`` is reported as an improvement (exit 0): update the baseline to keep it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pandas as pd
import torch
from scipy import stats as scipy_stats

from mlebench.config import RunSpec
from mlebench.data.synthetic import ensure_synthetic
from mlebench.engine.run import run_job
from mlebench.errors import ConfigError
from mlebench.fsutil import atomic_path
from mlebench.registry import method_entry
from mlebench.results.provenance import package_versions

DEFAULT_BASELINE = Path(__file__).resolve().parents[1] / "baselines" / "ci" / "synthetic.json"
BASELINE_FORMAT = 1
FLOOR_POINTS = 0.05
PROTOCOLS = ("missing-modality", "full")


@dataclass(frozen=True)
class GateSetup:
    """The gate's benchmark: small enough for CI (about 16 s per method on 2 cores: 60 steps of
    batch 8 at 64 px, then 16 validation images under both protocols), yet trained enough that
    a broken method shows (MLE-SAM reaches about 17 mIoU with every modality, 2 untrained)."""

    dataset: str = "synthetic"
    size: int = 64
    n_train: int = 48
    n_val: int = 16
    data_seed: int = 0
    preset: str = "tiny"
    steps: int = 60
    batch_size: int = 8
    crop_size: int = 64
    threads: int = 2
    protocols: tuple[str, ...] = PROTOCOLS


@dataclass
class CaseMeasure:
    value: float  # percent
    ci_low: float
    ci_high: float


Measures = dict[tuple[str, str, str, str], CaseMeasure]  # (method, protocol, case, metric)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def gate_data(setup: GateSetup) -> Path:
    return ensure_synthetic(size=setup.size, n_train=setup.n_train, n_val=setup.n_val, n_test=1,
                            seed=setup.data_seed, workers=1)


def measure(methods: Sequence[str], seed: int, setup: GateSetup, threads: int | None = None,
            echo: Callable[[str], None] = lambda _msg: None) -> Measures:
    """Train each method once with ``seed`` and evaluate the gate's protocols; mIoU-type values
    in percent with their bootstrap intervals."""
    root = gate_data(setup)
    out: Measures = {}
    train = {"batch_size": setup.batch_size, "crop_size": setup.crop_size, "base_size": setup.size}
    with tempfile.TemporaryDirectory(prefix="mlebench-check-") as tmp, torch_threads(threads or setup.threads):
        work = Path(tmp)
        for method in methods:
            echo(f"check: {method} (seed {seed}, {setup.steps} steps, {threads or setup.threads} threads)")
            checkpoint = work / f"{method}.pt"
            presets = method_entry(method).presets
            # (choice) a method without the gate's preset (a plugin's) runs at its own default
            preset = setup.preset if setup.preset in presets else presets[0]
            for i, protocol in enumerate(setup.protocols):
                trains = i == 0  # the first protocol trains; the others evaluate its checkpoint
                spec = RunSpec(method=method, protocol=protocol, dataset=setup.dataset, data_root=root,
                               preset=preset, steps=setup.steps if trains else None, seed=seed,
                               train_options=train, results=work / "gate.sqlite",
                               save_checkpoint=checkpoint if trains else None,
                               checkpoint=None if trains else checkpoint)
                outcome = run_job(spec, echo=lambda _msg: None)
                for row in outcome.rows:
                    if row.metric.startswith("miou") and not row.class_name:
                        case = f"{','.join(row.test_modalities)}|{row.condition}|{row.corruption}"
                        out[(method, protocol, case, row.metric)] = CaseMeasure(
                            100 * row.value, 100 * row.ci_low, 100 * row.ci_high)
    return out


def allowed_drop(mean_sd_n: tuple[float, float, int], thread_delta: float) -> float:
    """max(t(0.95, n-1) * sd * sqrt(1 + 1/n), thread difference, floor), in points."""
    _, sd, n = mean_sd_n
    bound = float(scipy_stats.t.ppf(0.95, n - 1)) * sd * math.sqrt(1 + 1 / n) if n > 1 else math.inf
    return max(bound, thread_delta, FLOOR_POINTS)


def make_baseline(methods: Sequence[str], seeds: Sequence[int], setup: GateSetup, commit: str | None,
                  echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every method over ``seeds`` (and seed 0 with one thread) into a baseline."""
    if 0 not in seeds or len(seeds) < 2:
        raise ConfigError(f"--seeds must include 0 and at least one other seed, got {list(seeds)}")
    runs = {seed: measure(methods, seed, setup, echo=echo) for seed in seeds}
    single = measure(methods, 0, setup, threads=1, echo=echo) if setup.threads != 1 else runs[0]
    cases = []
    for key in sorted(runs[0]):
        values = [runs[s][key].value for s in seeds if key in runs[s]]
        series = pd.Series(values)
        mean, sd = float(series.mean()), float(series.std(ddof=1)) if len(values) > 1 else math.nan
        thread_delta = abs(single[key].value - runs[0][key].value) if key in single else 0.0
        method, protocol, case, metric = key
        cases.append({
            "method": method, "protocol": protocol, "case": case, "metric": metric,
            "seeds": {str(s): runs[s][key].value for s in seeds if key in runs[s]},
            "mean": mean, "sd": sd, "seed0_ci": [runs[0][key].ci_low, runs[0][key].ci_high],
            "thread_delta": thread_delta, "allowed_drop": allowed_drop((mean, sd, len(values)), thread_delta),
        })  # fmt: skip
    return {
        "format": BASELINE_FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "versions": package_versions(),
        "setup": dataclasses.asdict(setup),
        "seeds": list(seeds),
        "rule": "fail when now < mean - max(t(0.95, n-1) * sd * sqrt(1 + 1/n), thread_delta, "
                f"{FLOOR_POINTS}); values are mIoU in percent, 'now' is seed 0",
        "cases": cases,
    }


def read_baseline(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"baseline {path} does not exist; create it with `mlebench check --update --baseline {path}`")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read baseline {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT or not isinstance(data.get("cases"), list):
        raise ConfigError(f"{path} is not an mlebench CI baseline (format {BASELINE_FORMAT})")
    for i, case in enumerate(data["cases"]):
        missing = {"method", "protocol", "case", "metric", "mean", "allowed_drop"} - set(case)
        if missing:
            raise ConfigError(f"baseline {path}: case {i} lacks {', '.join(sorted(missing))}")
        _check_case(path, case)
    return data


def _check_case(path: Path, case: dict[str, Any]) -> None:
    """A case's numbers must be what its seeds say: a finite mean that is the seeds' mean and an
    allowed drop that follows the rule. A NaN would switch the case off (every comparison with
    NaN is false); a hand-edited mean or tolerance would move the gate silently."""
    where = f"baseline {path}: {case['method']} {case['protocol']} {case['case']} {case['metric']}"
    for key in ("mean", "allowed_drop"):
        value = case[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(f"{where}: {key} is {value!r}, not a finite number; re-measure with "
                              "`mlebench check --update`")
    seeds = case.get("seeds")
    if not seeds:
        return
    values = list(seeds.values())
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise ConfigError(f"{where}: its seeds hold a value that is not a finite number ({values})")
    mean = sum(values) / len(values)
    sd = float(pd.Series(values).std(ddof=1)) if len(values) > 1 else math.nan
    expected = allowed_drop((mean, sd, len(values)), float(case.get("thread_delta", 0.0)))
    if not math.isclose(case["mean"], mean, rel_tol=1e-9, abs_tol=1e-9):
        raise ConfigError(f"{where}: mean {case['mean']} is not the mean of its seeds ({mean}); the file was "
                          "edited by hand or damaged: re-measure with `mlebench check --update`")
    if not math.isclose(case["allowed_drop"], expected, rel_tol=1e-9, abs_tol=1e-9):
        raise ConfigError(f"{where}: allowed_drop {case['allowed_drop']} does not follow the rule ({expected} "
                          "from its seeds and thread difference); re-measure with `mlebench check --update`")


def update_baseline(path: Path, methods: Sequence[str], seeds: Sequence[int], commit: str | None,
                    keep_others: bool, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Re-measure ``methods`` over ``seeds`` and write the baseline to ``path``; ``keep_others``:
    the cases of every other method already in the file stay (``check --update --methods X``)."""
    old = read_baseline(path) if keep_others and path.exists() else None
    fresh = make_baseline(methods, seeds, GateSetup(), commit, echo=echo)
    if old is not None:
        fresh["cases"] = [c for c in old["cases"] if c["method"] not in methods] + fresh["cases"]
    write_baseline(path, fresh)
    return fresh


def run_gate(path: Path, methods: Sequence[str],
             echo: Callable[[str], None] = lambda _msg: None) -> tuple[GateResult, dict[str, Any]]:
    """Measure ``methods`` once with the baseline's recorded setup and compare; returns the
    result and the baseline it was compared with."""
    data = read_baseline(path)
    setup = GateSetup(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["setup"].items()})
    now = measure(methods, 0, setup, echo=echo)
    return compare_with_baseline(now, data, methods), data


def write_baseline(path: Path, baseline: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(baseline, indent=1, sort_keys=False) + "\n")


@dataclass
class GateResult:
    table: pd.DataFrame  # one row per compared case
    missing_methods: list[str] = field(default_factory=list)  # registered, no baseline
    retired_methods: list[str] = field(default_factory=list)  # in the baseline, not registered

    @property
    def failed(self) -> pd.DataFrame:
        return self.table[self.table["status"] == "fell"]

    @property
    def improved(self) -> pd.DataFrame:
        return self.table[self.table["status"] == "improved"]

    @property
    def passed(self) -> bool:
        return self.failed.empty and not self.missing_methods


def compare_with_baseline(now: Measures, baseline: dict[str, Any], methods: Sequence[str]) -> GateResult:
    rows = []
    known = {c["method"] for c in baseline["cases"]}
    for c in baseline["cases"]:
        if c["method"] not in methods:
            continue
        key = (c["method"], c["protocol"], c["case"], c["metric"])
        value = now[key].value if key in now else math.nan
        delta = value - c["mean"]
        status = ("missing" if math.isnan(value) else "fell" if delta < -c["allowed_drop"]
                  else "improved" if delta > c["allowed_drop"] else "ok")
        rows.append({"method": c["method"], "protocol": c["protocol"], "case": c["case"], "metric": c["metric"],
                     "baseline": c["mean"], "sd": c.get("sd", math.nan), "now": value, "delta": delta,
                     "allowed_drop": c["allowed_drop"], "status": status})
    table = pd.DataFrame(rows, columns=["method", "protocol", "case", "metric", "baseline", "sd", "now", "delta",
                                        "allowed_drop", "status"])
    table.loc[table["status"] == "missing", "status"] = "fell"  # a case that vanished is a regression
    return GateResult(table, missing_methods=[m for m in methods if m not in known],
                      retired_methods=sorted(known - set(methods)))


def format_gate(result: GateResult) -> str:
    """The failures (and improvements) as a table a CI log reader can act on."""
    lines = []

    def block(title: str, frame: pd.DataFrame) -> None:
        lines.append(title)
        lines.append(f"  {'method':<24} {'case':<36} {'baseline':>14} {'now':>7} {'change':>7} {'allowed drop':>12}")
        for r in frame.itertuples():
            label = r.case.replace("|all|none", "").replace(",", "-") if r.metric == "miou" else r.metric
            now = f"{r.now:7.2f}" if r.now == r.now else "   gone"
            lines.append(f"  {r.method:<24} {r.protocol + ' ' + label:<36} {r.baseline:7.2f} ± {r.sd:4.2f} "
                         f"{now} {r.delta:+7.2f} {r.allowed_drop:12.2f}")

    if not result.failed.empty:
        block(f"FELL: {len(result.failed)} case(s) below the baseline by more than the allowed drop", result.failed)
    if not result.improved.empty:
        block(f"improved: {len(result.improved)} case(s) (update the baseline to keep the gain: "
              "mlebench check --update)", result.improved)
    for method in result.missing_methods:
        lines.append(f"FELL: method {method} has no baseline; add it with `mlebench check --update` and commit "
                     "baselines/ci/synthetic.json")
    for method in result.retired_methods:
        lines.append(f"note: the baseline has method {method}, which is no longer registered")
    ok = len(result.table) - len(result.failed) - len(result.improved)
    lines.append(f"{'FAILED' if not result.passed else 'passed'}: {len(result.table)} cases compared, {ok} within "
                 f"tolerance, {len(result.improved)} improved, {len(result.failed)} fell")
    return "\n".join(lines)
