"""What a run is (:class:`RunSpec`), the ``--config`` YAML, and the checks of both that run
before anything is written.

Every check raises :class:`~mlebench.errors.ConfigError` with one line that names the option or
key and the value, so that ``mlebench run`` stops before it trains, touches the results store or
writes a checkpoint:

- :func:`read_config` reads the YAML (sections ``method``, ``train``, ``protocol``);
- :func:`validate_sections` checks each section against a typed schema (pydantic, strict: no
  ``"8"`` for an integer, no ``true`` for a number, no ``"no"`` for a flag):

  * ``train``: the fields of :class:`TrainConfig` with their ranges
    (``batch_size >= 1``, ``lr > 0``, ...); ``seed`` and ``device`` are refused (they are
    ``--seed`` and ``--device``);
  * ``method``: the fields of the method's own configuration dataclass, found from the method's
    builder (see :func:`method_option_types`), so every method gets its own schema;
  * ``protocol``: the keyword arguments of the protocol class's ``__init__``;

- :func:`validate_spec` checks a whole :class:`RunSpec` (the CLI values and the merged options),
  the device and the output paths' conflicts; :func:`check_output_locations` checks that every
  output location can be written, without writing anything.

Numbers in YAML: PyYAML reads YAML 1.1, where ``1e-4`` (no dot) is the *string* ``"1e-4"``. A
string that is a plain decimal float literal (``1e-4``, ``"0.5"``, ``-2.5E+3``) is accepted
where a float is expected and read as that float; anything else (``"fast"``, ``"nan"``) is an
error. Integer and boolean options take no strings at all.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Mapping, Union

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, create_model

from mlebench.errors import ConfigError
from mlebench.results.rows import BootstrapSpec

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
    warmup_ratio: float = 0.1  # the warm-up starts at this fraction of lr
    power: float = 0.9
    crop_size: int = 128
    base_size: int | None = None  # short side the random scale is relative to (default: crop)
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
    preset: str = "tiny"
    method_options: dict[str, Any] = field(default_factory=dict)
    train_options: dict[str, Any] = field(default_factory=dict)
    protocol_options: dict[str, Any] = field(default_factory=dict)
    steps: int | None = None
    epochs: int | None = None
    seed: int = 0
    device: str = "cpu"
    results: Path = Path("results.sqlite")
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
# typed schemas
# --------------------------------------------------------------------------------------------
_FLOAT_LITERAL = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*\Z")


def _float_literal(value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` as a string: a plain float literal counts as that float."""
    if isinstance(value, str) and _FLOAT_LITERAL.match(value):
        return float(value)
    return value


LenientFloat = Annotated[float, BeforeValidator(_float_literal)]


def _lenient(annotation: Any) -> Any:
    """``annotation`` with every ``float`` accepting float literals written as strings."""
    if annotation is float:
        return LenientFloat
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return Union[tuple(_lenient(a) for a in typing.get_args(annotation))]  # type: ignore[return-value]
    return annotation


def _constrained(annotation: Any, limits: Mapping[str, Any] | None) -> Any:
    """``annotation`` with range ``limits`` (pydantic Field kwargs) on its non-None part."""
    annotation = _lenient(annotation)
    if not limits:
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = typing.get_args(annotation)
        return Union[tuple(a if a is type(None) else Annotated[a, Field(**limits)] for a in args)]  # type: ignore
    return Annotated[annotation, Field(**limits)]


def _describe(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not typing.get_args(annotation) else None
    return text or str(annotation).replace("typing.", "")


def _check_section(
    where: str, section: str, values: Mapping[str, Any], types_: Mapping[str, Any],
    limits: Mapping[str, Mapping[str, Any]] | None = None, owner: str = "",
) -> dict[str, Any]:
    """Validate ``values`` against ``types_`` (name -> annotation) with pydantic in strict mode;
    unknown keys and wrong values are one ConfigError that names each key and value."""
    limits = limits or {}
    unknown = sorted(set(map(str, values)) - set(types_))
    if unknown:
        known = ", ".join(sorted(types_)) or "(none)"
        raise ConfigError(f"{where}unknown {section} option(s) {', '.join(unknown)}{owner}; known: {known}")
    fields = {name: (_constrained(types_[name], limits.get(name)), None) for name in values}
    model = create_model(f"{section}_options", __config__=ConfigDict(strict=True, extra="forbid"), **fields)
    try:
        checked = model(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"])
            name = str(error["loc"][0]) if error["loc"] else key
            message = error["msg"][:1].lower() + error["msg"][1:]
            expected = f" ({name} is {_describe(types_[name])})" if name in types_ else ""
            problems.append(f"{section}.{key} = {error['input']!r}: {message}{expected}")
        raise ConfigError(where + "; ".join(problems)) from None
    return {name: getattr(checked, name) for name in values}


def _type_hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception:  # an annotation that does not resolve: no type information
        return {}


def train_option_types() -> dict[str, Any]:
    """Name -> annotation of every ``train:`` option (TrainConfig's fields)."""
    hints = _type_hints(TrainConfig)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(TrainConfig)}


#: ranges of the training options (pydantic Field keyword arguments)
TRAIN_LIMITS: dict[str, dict[str, Any]] = {
    "steps": {"ge": 1}, "batch_size": {"ge": 1}, "lr": {"gt": 0}, "weight_decay": {"ge": 0},
    "warmup_fraction": {"ge": 0, "le": 1}, "warmup_ratio": {"ge": 0, "le": 1}, "power": {"ge": 0},
    "crop_size": {"ge": 1}, "base_size": {"ge": 1}, "num_workers": {"ge": 0}, "log_every": {"ge": 1},
    "checkpoint_every": {"ge": 0},
}  # fmt: skip


def validate_train_options(options: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    for key, flag in CLI_ONLY_TRAIN_OPTIONS.items():
        if key in options:
            raise ConfigError(f"{where}train.{key} = {options[key]!r} is not read from a config file "
                              f"(it would be ignored); use {flag} on the command line")
    types_ = {k: v for k, v in train_option_types().items() if k not in CLI_ONLY_TRAIN_OPTIONS}
    return _check_section(where, "train", options, types_, TRAIN_LIMITS)


def _schema_of(obj: Any) -> Any:
    """A configuration dataclass that ``obj`` (a builder or a class) exposes, or None.

    Looked for, in order: a ``config_schema()`` hook returning a dataclass; for a class, the
    dataclass annotated on its ``__init__``'s ``config`` parameter.
    """
    hook = getattr(obj, "config_schema", None)
    if callable(hook):
        schema = hook()
        if dataclasses.is_dataclass(schema):
            return schema
    if inspect.isclass(obj):
        candidate = _type_hints(obj.__init__).get("config")
        if inspect.isclass(candidate) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def method_option_types(name: str) -> tuple[str, dict[str, Any]] | None:
    """(schema name, option name -> annotation) of a registered method's options, or None when
    the method exposes no typed configuration (then only ``build_method`` checks the names).

    Found generically from the method's builder: a ``config_schema()`` hook on the builder or on
    the class it is annotated to return, else the dataclass that class's ``__init__`` takes as
    ``config``, else the builder's own keyword parameters.
    """
    from methods import base, method_names

    if name not in method_names():
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(method_names())}")
    builder = getattr(base, "_METHODS", {}).get(name)
    if builder is None:
        return None
    schema = _schema_of(builder)
    if schema is None:
        returned = _type_hints(builder).get("return")
        schema = _schema_of(returned) if inspect.isclass(returned) else None
    if schema is not None:
        hints = _type_hints(schema)
        return schema.__name__, {f.name: hints.get(f.name, Any) for f in dataclasses.fields(schema)}
    parameters = list(inspect.signature(builder).parameters.values())[3:]  # after info, modalities, preset
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    hints = _type_hints(builder)
    return name, {p.name: hints.get(p.name, Any) for p in parameters}


def validate_method_options(method: str, options: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    found = method_option_types(method)
    if found is None:
        return dict(options)
    schema, types_ = found
    return _check_section(where, "method", options, types_, owner=f" for {method} ({schema})")


def protocol_option_types(name: str) -> dict[str, Any] | None:
    """Option name -> annotation of a protocol (its class's ``__init__`` keywords); None when it
    takes ``**kwargs``."""
    from mlebench.protocols import base, protocol_names

    if name not in protocol_names():
        raise ConfigError(f"unknown protocol {name!r}; known: {', '.join(protocol_names())}")
    factory = getattr(base, "_PROTOCOLS", {}).get(name)
    if factory is None:
        return None
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    hints = _type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    return {p.name: hints.get(p.name, Any) for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL}


def validate_protocol_options(protocol: str, options: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    types_ = protocol_option_types(protocol)
    if types_ is None:
        return dict(options)
    return _check_section(where, "protocol", options, types_, owner=f" for {protocol}")


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


def default_num_workers(device: str, local_processes: int = 1) -> int:
    """Data-loading worker processes when none are asked for (choice, docs/benchmark.md).

    On CPU the model already uses every core, so loading in the main process (0) costs the
    least; a worker only overlaps decoding with compute it competes with. On a GPU the CPU is
    otherwise idle: up to 8 workers per process, leaving one core per process free.
    """
    if not str(device).startswith("cuda"):
        return 0
    cores = os.cpu_count() or 1
    return max(1, min(8, cores // max(1, local_processes) - 1))


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.expanduser().resolve() == b.expanduser().resolve()


def validate_spec(spec: RunSpec, job: str = "run") -> None:
    """Check a whole run before anything is read or written; ``job``: ``run`` (train or load
    ``--checkpoint``, then evaluate) or ``train`` (train only)."""
    from mlebench.data import dataset_info
    from methods.base import method_presets

    values = {k: getattr(spec, k) for k in _SPEC_TYPES}
    try:
        _check_section("", "run", values, _SPEC_TYPES, _SPEC_LIMITS)
    except ConfigError as exc:  # name the command-line flag rather than the field
        text = str(exc)
        for key, flag in _SPEC_FLAGS.items():
            text = text.replace(f"run.{key} =", f"{flag} =")
        raise ConfigError(text) from None
    if spec.steps is not None and spec.epochs is not None:
        raise ConfigError("give --steps or --epochs, not both")
    info = dataset_info(spec.dataset)
    presets = method_presets(spec.method)
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
        if spec.save_checkpoint is not None and _same_file(spec.save_checkpoint, spec.checkpoint):
            raise ConfigError(f"--save-checkpoint {spec.save_checkpoint} is the --checkpoint being evaluated; "
                              "writing there would destroy it")
        if spec.save_checkpoint is not None:
            raise ConfigError("--save-checkpoint has no effect with --checkpoint (nothing is trained); drop one")
        if spec.resume:
            raise ConfigError("--resume continues training, but with --checkpoint nothing is trained; drop one")
    elif spec.resume and spec.save_checkpoint is None and job == "run":
        raise ConfigError("--resume needs --save-checkpoint: the checkpoint `run` writes by default "
                          "(runs/<run id>.pt) is new for every run, so give the path the interrupted run wrote")
    if spec.save_checkpoint is not None and job == "run" and _same_file(spec.save_checkpoint, spec.results):
        raise ConfigError(f"--save-checkpoint {spec.save_checkpoint} is the results store (--results); "
                          "writing the checkpoint there would destroy it")


# --------------------------------------------------------------------------------------------
# output locations
# --------------------------------------------------------------------------------------------
def _nearest_existing(path: Path) -> Path:
    probe = path
    while True:
        try:
            probe.lstat()
            return probe
        except FileNotFoundError:
            if probe.parent == probe:
                return probe
            probe = probe.parent
        except NotADirectoryError:  # a parent is a regular file
            probe = probe.parent


def check_writable_file(path: Path, what: str, in_place: bool = False) -> None:
    """``path`` can be created or replaced (its folder exists or can be made, and is writable);
    ``in_place``: an existing file is written in place (SQLite), so it must be writable too.
    Nothing is written; ``what`` names the option in the message."""
    path = Path(path).expanduser().absolute()
    if path.exists():
        if path.is_dir():
            raise ConfigError(f"{what} {path} is a directory; give a file path")
        if in_place and not os.access(path, os.W_OK):
            raise ConfigError(f"{what} {path} is read-only")
        folder = path.parent
    else:
        folder = _nearest_existing(path)
        if not folder.is_dir():
            raise ConfigError(f"{what} {path} cannot be created: {folder} is a file, not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} cannot be written: no write permission in {folder}")


def check_writable_dir(path: Path, what: str) -> None:
    """Files can be created in folder ``path`` (it exists or can be made); nothing is written."""
    path = Path(path).expanduser().absolute()
    anchor = _nearest_existing(path)
    if not anchor.is_dir():
        raise ConfigError(f"{what} {path} cannot be created: {anchor} is a file, not a directory")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} cannot be written: no write permission in {anchor}")


# First bytes of files a checkpoint must never replace, and of the files it may.
_FOREIGN_MAGIC = {b"SQLite format 3\x00": "an SQLite database (a results store?)", b"\x89PNG": "a PNG image",
                  b"\xff\xd8\xff": "a JPEG image", b"\x93NUMPY": "a NumPy array"}
_CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive; a legacy pickle


def check_checkpoint_target(path: Path, data_root: Path | None = None, option: str = "--save-checkpoint") -> None:
    """Training may write its checkpoint at ``path``: the location is writable, and an existing
    file there is a checkpoint (never a results store, a data file or anything else)."""
    path = Path(path).expanduser()
    check_writable_file(path, option)
    if data_root is not None:
        root = Path(data_root).expanduser().resolve()
        if path.resolve() == root or root in path.resolve().parents:
            raise ConfigError(f"{option} {path} is inside the data set folder {root}; "
                              "write checkpoints outside the data")
    if path.is_file():
        try:
            with open(path, "rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            raise ConfigError(f"{option} {path} exists and cannot be read: {exc}") from None
        for magic, what in _FOREIGN_MAGIC.items():
            if head.startswith(magic):
                raise ConfigError(f"{option} {path} is {what}; writing the checkpoint there would destroy it")
        if head and not head.startswith(_CHECKPOINT_MAGIC):
            raise ConfigError(f"{option} {path} exists and is not a checkpoint; refusing to overwrite it")

