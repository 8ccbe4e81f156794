"""What a run is (:class:`RunSpec`, :class:`TrainConfig`), the ``--config`` YAML, how the command
line's options merge into a run, and the checks of a whole run that happen before anything is
written.

Every check raises :class:`~mlebench.errors.ConfigError` with one line that names the option or
key and the value, so that ``mlebench run`` stops before it trains, touches the results store or
writes a checkpoint:

- :func:`read_config` reads the YAML (sections ``method``, ``train``, ``protocol``);
- :func:`merge_run_options` lays ``-o KEY=VALUE`` and ``--weights`` over the file's sections and
  checks each section against its typed schema (:mod:`mlebench.schema`; ``train``: the fields of
  :class:`TrainConfig` within :data:`TRAIN_LIMITS`, ``seed`` and ``device`` refused: they are
  ``--seed`` and ``--device``);
- :func:`validate_spec` checks a whole :class:`RunSpec` once, where a job starts: option types
  and ranges, the method's preset (from the registry), modalities, split, the merged sections,
  the device and the conflicts between output paths. Whether each output location can be
  written is :mod:`mlebench.outputs`' part.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from mlebench.data import dataset_info
from mlebench.errors import ConfigError
from mlebench.outputs import same_file
from mlebench.registry import method_entry
from mlebench.results.liveness import DEFAULT_HEARTBEAT_S
from mlebench.results.rows import BootstrapSpec
from mlebench.results.target import parse_target
from mlebench.schema import check_section, type_hints, validate_method_options, validate_protocol_options

SECTIONS = ("method", "train", "protocol")
#: options of the ``train:`` section that only the command line sets
CLI_ONLY_TRAIN_OPTIONS = {"seed": "--seed", "device": "--device"}


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3  # (choice) the paper gives no learning rate
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1  # share of the steps spent warming up (10 of 100 epochs)
    warmup_steps: int | None = None  # the warm-up in steps instead (SAMed: 250 iterations)
    warmup_ratio: float = 0.1  # the warm-up starts at this fraction of lr
    schedule: Literal["warmup-poly", "cosine"] = "warmup-poly"  # after the warm-up
    power: float = 0.9  # warmup-poly's exponent
    min_lr: float = 0.0  # cosine's floor (CWSAM: lr_min 1e-7)
    crop_size: int = 128
    base_size: int | None = None  # size the random scale is relative to (default: the crop, as DELIVER)
    crop_offsets: Literal["reference", "exact"] = "reference"  # mlebench.data.augment
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0
    amp: bool = False  # bf16 autocast
    log_every: int = 10
    checkpoint_every: int = 0  # 0: only at the end (when a checkpoint path is given)


@dataclass
class RunSpec:
    method: str
    protocol: str
    dataset: str = "synthetic"
    data_root: Path | None = None
    train_modalities: tuple[str, ...] | None = None
    preset: str | None = None  # None: the method's default preset (the registry's)
    method_options: dict[str, Any] = field(default_factory=dict)
    train_options: dict[str, Any] = field(default_factory=dict)
    protocol_options: dict[str, Any] = field(default_factory=dict)
    steps: int | None = None
    epochs: int | None = None
    seed: int = 0
    device: str = "cpu"
    results: Path | str = Path("results.sqlite")  # a file, or a database URL (mlebench.results.target)
    checkpoint: Path | None = None  # evaluate this instead of training
    save_checkpoint: Path | None = None  # where training writes (default runs/<run id>.pt)
    resume: bool = False
    eval_split: str = "val"
    eval_batch_size: int = 4
    feature_cache: bool = True
    num_workers: int | None = None  # data-loading processes, train and eval (None: default_num_workers)
    eval_amp: bool = False  # evaluate under bf16 autocast (``--amp``)
    bootstrap: BootstrapSpec = field(default_factory=BootstrapSpec)
    group_id: str | None = None  # ties the runs of one multi-seed command together
    heartbeat_interval: float = DEFAULT_HEARTBEAT_S  # seconds between a running job's heartbeats
    sweep_cell: str | None = None  # the sweep cell this run is (mlebench.sweep), stored in its config

    @property
    def results_file(self) -> Path | None:
        """The SQLite file ``results`` names (None for a database server)."""
        return parse_target(self.results).path


# --------------------------------------------------------------------------------------------
# the YAML file
# --------------------------------------------------------------------------------------------
def read_config(path: Path | None) -> dict[str, dict[str, Any]]:
    """The ``--config`` file's sections (``{}`` without one); its shape is checked, not its values."""
    if path is None:
        return {}
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).replace("\n", " ")
        raise ConfigError(f"cannot read config {path}: {reason}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping with 'method', 'train' and/or 'protocol'")
    unknown = sorted(set(map(str, data)) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"config {path}: unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    for key, value in data.items():
        if value is None:
            data[key] = {}
        elif not isinstance(value, dict):
            raise ConfigError(f"config {path}: section {key!r} must be a mapping, not {value!r}")
    return data


# --------------------------------------------------------------------------------------------
# option sections
# --------------------------------------------------------------------------------------------
def train_option_types() -> dict[str, Any]:
    """Name -> annotation of every ``train:`` option (TrainConfig's fields)."""
    hints = type_hints(TrainConfig)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(TrainConfig)}


#: ranges of the training options (pydantic Field keyword arguments)
TRAIN_LIMITS: dict[str, dict[str, Any]] = {
    "steps": {"ge": 1}, "batch_size": {"ge": 1}, "lr": {"gt": 0}, "weight_decay": {"ge": 0},
    "warmup_fraction": {"ge": 0, "le": 1}, "warmup_steps": {"ge": 0}, "warmup_ratio": {"ge": 0, "le": 1},
    "power": {"ge": 0}, "min_lr": {"ge": 0},
    "crop_size": {"ge": 1}, "base_size": {"ge": 1}, "num_workers": {"ge": 0}, "log_every": {"ge": 1},
    "checkpoint_every": {"ge": 0},
}  # fmt: skip


def validate_train_options(options: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    for key, flag in CLI_ONLY_TRAIN_OPTIONS.items():
        if key in options:
            raise ConfigError(f"{where}train.{key} = {options[key]!r} is not read from a config file "
                              f"(it would be ignored); use {flag} on the command line")
    types_ = {k: v for k, v in train_option_types().items() if k not in CLI_ONLY_TRAIN_OPTIONS}
    return check_section(where, "train", options, types_, TRAIN_LIMITS)


def validate_sections(config: Mapping[str, Mapping[str, Any]], method: str, protocol: str | None,
                      where: str = "") -> dict[str, dict[str, Any]]:
    """The checked ``method``, ``train`` and ``protocol`` sections (floats written as strings
    become floats); ``protocol`` None: the command evaluates nothing, its section is not read."""
    checked = {"method": validate_method_options(method, config.get("method", {}), where),
               "train": validate_train_options(config.get("train", {}), where),
               "protocol": dict(config.get("protocol", {}))}
    if protocol is not None:
        checked["protocol"] = validate_protocol_options(protocol, checked["protocol"], where)
    return checked


def merge_run_options(method: str, protocol: str | None, config: Mapping[str, Mapping[str, Any]],
                      given: Mapping[str, Any], weights: Path | str | None = None,
                      where: str = "") -> dict[str, dict[str, Any]]:
    """The ``method``, ``train`` and ``protocol`` sections of a run: ``config`` (the ``--config``
    file's, checked against each schema; ``where`` names the file), then the ``-o KEY=VALUE``
    options ``given`` and ``--weights`` over the method section. ``--weights`` sets the builder
    option the registry names for the method (``none``: a seeded random init instead of the
    preset's weights). ``protocol`` None: the command evaluates nothing."""
    checked = validate_sections(config, method, protocol, where=where) if config else {}
    method_options = dict(checked.get("method", {}))
    given = dict(given)
    if weights is not None:
        target = method_entry(method).weights_option
        if target is None:
            raise ConfigError(f"--weights: method {method} takes no weights file")
        given[target] = None if str(weights).lower() == "none" else str(weights)
    if given:
        method_options.update(validate_method_options(method, given, "-o/--weights: "))
    return {"method": method_options, "train": dict(checked.get("train", {})),
            "protocol": dict(checked.get("protocol", {}))}


# --------------------------------------------------------------------------------------------
# the whole run
# --------------------------------------------------------------------------------------------
def available_devices() -> list[str]:
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def check_device(device: str, option: str = "--device") -> None:
    """``device`` exists on this machine (checked before anything is written)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{option} {device!r} is not a device name; use cpu, cuda, cuda:N or mps "
                          f"(available here: {', '.join(available_devices())})") from None
    available = ", ".join(available_devices())
    if parsed.type == "cpu":
        return
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option} {device}: CUDA is not available on this machine "
                              f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
                              f"available: {available}")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(f"{option} {device}: this machine has {count} CUDA device(s); available: {available}")
        return
    if parsed.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"{option} {device}: Apple's MPS backend is not available on this machine; "
                              f"available: {available}")
        return
    raise ConfigError(f"{option} {device}: mlebench runs on cpu, cuda or mps; available: {available}")


_SPEC_LIMITS: dict[str, dict[str, Any]] = {"steps": {"ge": 1}, "epochs": {"ge": 1}, "eval_batch_size": {"ge": 1},
                                           "num_workers": {"ge": 0}}
_SPEC_TYPES: dict[str, Any] = {"steps": int | None, "epochs": int | None, "seed": int, "eval_batch_size": int,
                               "resume": bool, "feature_cache": bool, "device": str, "eval_split": str,
                               "num_workers": int | None, "eval_amp": bool}
_SPEC_FLAGS = {"steps": "--steps", "epochs": "--epochs", "seed": "--seed", "eval_batch_size": "--batch-size",
               "resume": "--resume", "feature_cache": "--no-feature-cache", "device": "--device",
               "eval_split": "--split", "num_workers": "--num-workers", "eval_amp": "--amp"}



def validate_spec(spec: RunSpec, job: str = "run") -> None:
    """Check a whole run before anything is read or written, once, where a job starts; ``job``:
    ``run`` (train or load ``--checkpoint``, then evaluate) or ``train`` (train only). Fills in
    what the registry decides (the preset) and the checked option sections."""
    values = {k: getattr(spec, k) for k in _SPEC_TYPES}
    try:
        check_section("", "run", values, _SPEC_TYPES, _SPEC_LIMITS)
    except ConfigError as exc:  # name the command-line flag rather than the field
        text = str(exc)
        for key, flag in _SPEC_FLAGS.items():
            text = text.replace(f"run.{key} =", f"{flag} =")
        raise ConfigError(text) from None
    if spec.steps is not None and spec.epochs is not None:
        raise ConfigError("give --steps or --epochs, not both")
    info = dataset_info(spec.dataset)
    presets = method_entry(spec.method).presets
    if spec.preset is None:
        spec.preset = presets[0]
    if spec.preset not in presets:
        raise ConfigError(f"--preset {spec.preset!r}: method {spec.method} has no such preset; known: {', '.join(presets)}")
    if spec.train_modalities is not None:
        mods = tuple(spec.train_modalities)
        if not mods:
            raise ConfigError(f"--train-modalities is empty; give some of {', '.join(info.modality_names)}")
        for name in mods:
            info.modality(name)
        if len(set(mods)) != len(mods):
            raise ConfigError(f"--train-modalities lists a modality twice: {','.join(mods)}")
    if job == "run" and spec.eval_split not in info.splits:
        raise ConfigError(f"--split {spec.eval_split!r}: unknown split for {info.name}; known: {', '.join(info.splits)}")
    spec.method_options = validate_method_options(spec.method, spec.method_options)
    spec.train_options = validate_train_options(spec.train_options)
    if job == "run":
        spec.protocol_options = validate_protocol_options(spec.protocol, spec.protocol_options)
    check_device(spec.device)
    # What training writes, and what --resume continues.
    if spec.checkpoint is not None:
        for value, flag in ((spec.steps, "--steps"), (spec.epochs, "--epochs"),
                            (spec.train_options.get("checkpoint_every"), "--checkpoint-every")):
            if value is not None:
                raise ConfigError(f"{flag} has no effect with --checkpoint (the checkpoint is evaluated, nothing "
                                  "is trained); drop one")
        if spec.save_checkpoint is not None and same_file(spec.save_checkpoint, spec.checkpoint):
            raise ConfigError(f"--save-checkpoint {spec.save_checkpoint} is the --checkpoint being evaluated; "
                              "writing there would destroy it")
        if spec.save_checkpoint is not None:
            raise ConfigError("--save-checkpoint has no effect with --checkpoint (nothing is trained); drop one")
        if spec.resume:
            raise ConfigError("--resume continues training, but with --checkpoint nothing is trained; drop one")
    elif spec.resume and spec.save_checkpoint is None and job == "run":
        raise ConfigError("--resume needs --save-checkpoint: the checkpoint `run` writes by default "
                          "(runs/<run id>.pt) is new for every run, so give the path the interrupted run wrote")
    if not spec.heartbeat_interval > 0:
        raise ConfigError(f"--heartbeat-interval must be > 0 seconds, got {spec.heartbeat_interval}")
    if spec.save_checkpoint is not None and job == "run" and spec.results_file is not None \
            and same_file(spec.save_checkpoint, spec.results_file):
        raise ConfigError(f"--save-checkpoint {spec.save_checkpoint} is the results store (--results); "
                          "writing the checkpoint there would destroy it")
