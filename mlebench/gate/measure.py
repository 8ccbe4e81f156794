"""The gate's benchmark: what ``mlebench check`` measures for one training seed.

Each method is trained briefly on the embedded synthetic set on CPU and evaluated under the
``missing-modality`` protocol (15 subsets and their summaries) and the ``full`` protocol; the
result is every mIoU-type value in percent, keyed by (method, protocol, case, metric).
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from mlebench.config import RunSpec
from mlebench.data.synthetic import ensure_synthetic
from mlebench.engine.run import run_job
from mlebench.errors import ConfigError
from mlebench.registry import method_entry

PROTOCOLS = ("missing-modality", "full")


@dataclass(frozen=True)
class GateSetup:
    """The gate's benchmark: small enough for CI (about 20 s per method on 2 cores: 60 steps of
    batch 8 at 64 px, then 16 validation images under both protocols), yet trained enough that
    a broken method shows (MLE-SAM reaches about 18 mIoU with every modality, 2 untrained)."""

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

    @classmethod
    def from_record(cls, record: Mapping[str, Any], where: str) -> GateSetup:
        """The setup a baseline recorded (JSON lists back to tuples); unknown keys are refused."""
        fields = {f.name for f in cls.__dataclass_fields__.values()}
        unknown = sorted(set(record) - fields)
        if unknown:
            raise ConfigError(f"{where}: setup has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()})
        except TypeError as exc:
            raise ConfigError(f"{where}: setup is not a gate setup: {exc}") from None

    @property
    def other_threads(self) -> int:
        """The thread count the thread effect is measured against: 1, or 2 when the gate runs on 1."""
        return 1 if self.threads != 1 else 2


@dataclass(frozen=True)
class CaseMeasure:
    value: float  # percent
    ci_low: float
    ci_high: float


Key = tuple[str, str, str, str]  # (method, protocol, case, metric)
Measures = dict[Key, CaseMeasure]


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


def case_label(test_modalities: Sequence[str], condition: str, corruption: str) -> str:
    return f"{','.join(test_modalities)}|{condition}|{corruption}"


def measure(methods: Sequence[str], seed: int, setup: GateSetup, threads: int | None = None,
            echo: Callable[[str], None] = lambda _msg: None, derive_full: bool = True) -> Measures:
    """Train each method once with ``seed`` and evaluate the gate's protocols; mIoU-type values
    in percent with their bootstrap intervals.

    The ``full`` protocol's one case is the ``missing-modality`` protocol's all-modality subset:
    the same checkpoint, images and computation, bit for bit (all 72 seed pairs of the baseline
    agree, and a test checks it), so when both are asked for it is read from the latter instead
    of a second evaluation run (a tenth of the check's time); ``derive_full=False`` runs it."""
    root = gate_data(setup)
    derive_full = derive_full and "full" in setup.protocols and "missing-modality" in setup.protocols
    run_protocols = [p for p in setup.protocols if not (derive_full and p == "full")]
    out: Measures = {}
    threads = threads or setup.threads
    train = {"batch_size": setup.batch_size, "crop_size": setup.crop_size, "base_size": setup.size}
    with tempfile.TemporaryDirectory(prefix="mlebench-check-") as tmp, torch_threads(threads):
        work = Path(tmp)
        for method in methods:
            echo(f"check: {method} (seed {seed}, {setup.steps} steps, {threads} threads)")
            checkpoint = work / f"{method}.pt"
            presets = method_entry(method).presets
            # (choice) a method without the gate's preset (a plugin's) runs at its own default
            preset = setup.preset if setup.preset in presets else presets[0]
            for i, protocol in enumerate(run_protocols):
                trains = i == 0  # the first protocol trains; the others evaluate its checkpoint
                spec = RunSpec(method=method, protocol=protocol, dataset=setup.dataset, data_root=root,
                               preset=preset, steps=setup.steps if trains else None, seed=seed,
                               train_options=train, results=work / "gate.sqlite",
                               save_checkpoint=checkpoint if trains else None,
                               checkpoint=None if trains else checkpoint)
                outcome = run_job(spec, echo=lambda _msg: None)
                for row in outcome.rows:
                    if row.metric.startswith("miou") and not row.class_name:
                        case = case_label(row.test_modalities, row.condition, row.corruption)
                        out[(method, protocol, case, row.metric)] = CaseMeasure(
                            100 * row.value, 100 * row.ci_low, 100 * row.ci_high)
                if derive_full and protocol == "missing-modality":
                    everything = max((r for r in outcome.rows if r.metric == "miou" and not r.class_name
                                      and r.condition == "all" and r.corruption == "none"),
                                     key=lambda r: len(r.test_modalities))
                    case = case_label(everything.test_modalities, "all", "none")
                    out[(method, "full", case, "miou")] = out[(method, protocol, case, "miou")]
    return out
