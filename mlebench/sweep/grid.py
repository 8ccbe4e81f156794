"""A sweep's grid and its cells.

A grid names, per key, the values to sweep (``grid``: every combination is a cell) and the values
every cell shares (``set``); keys are the options of ``mlebench run`` (or ``eval``) with
underscores (``method``, ``dataset``, ``data_root``, ``train_modalities``, ``seed``, ``protocol``,
``preset``, ``steps``, ``split``, ...), and ``options`` holds method options (``-o key=value``).
``train_modalities: all-subsets`` stands for every non-empty subset of the data set's modalities
(15 for four). A file::

    job: run                     # or eval (each cell then names its checkpoint)
    results: postgresql+psycopg://me@db/mlebench
    grid:
      method: [mlesam, cmnext]
      train_modalities: all-subsets
      seed: [0, 1, 2]
    set:
      dataset: deliver
      data_root: /data/DELIVER
      preset: paper
      options: {top_k: 1}
    slurm: {partition: gpu, gpus_per_node: 1, cpus_per_task: 8, mem_gb: 64, timeout_min: 1440}
    local: {max_parallel: 2}

``grid`` may also be a list of such mappings: the cells of each, one after the other (e.g. the
baselines on fewer protocols than the method). A string value may name other keys of its cell in
braces: ``save_checkpoint: runs/{method}-s{seed}.pt`` (each cell its own file), ``checkpoint:
runs/{method}-s{seed}.pt`` (an ``eval`` cell of what a ``run`` cell wrote). A file may hold
several grids as YAML documents (``---``): stages, each run to its end before the next starts.

A cell is identified by a hash of its whole configuration as the job would run it (defaults
filled in, the data's identity included; where the results go, worker counts and the code commit
left out): :func:`identify`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import click
import yaml

from mlebench.errors import ConfigError

ALL_SUBSETS = "all-subsets"
JOBS = ("run", "eval")
#: keys a grid may not set: the sweep decides them
SWEEP_OWNED = {"results": "give --results to `sweep` (or `results:` in the grid file)",
               "seeds": "sweep seeds with the seed key", "resume": "a sweep re-runs what did not finish",
               "sweep_cell": "the sweep sets it"}
#: what does not change a cell's numbers: left out of its identity
NOT_IDENTITY = ("results", "heartbeat_interval", "num_workers", "group_id", "sweep_cell", "save_checkpoint")
FILE_KEYS = ("job", "results", "grid", "set", "slurm", "local", "name")


@dataclass
class Grid:
    """What to sweep: ``axes`` (sub-grids of key -> values, every combination of each a cell) and
    ``fixed`` (key -> value, every cell), for ``job`` (run or eval); executor settings."""

    axes: list[dict[str, list[Any]]] = field(default_factory=lambda: [{}])
    fixed: dict[str, Any] = field(default_factory=dict)
    job: str = "run"
    results: str | None = None
    slurm: dict[str, Any] = field(default_factory=dict)
    local: dict[str, Any] = field(default_factory=dict)
    name: str = "sweep"


@dataclass(frozen=True)
class Cell:
    """One job of a sweep: its options, its command line and its identity."""

    job: str
    options: dict[str, Any]
    argv: tuple[str, ...]
    cell_id: str
    identity: dict[str, Any]

    @property
    def label(self) -> str:
        return " ".join(f"{k}={_shown(v)}" for k, v in self.options.items() if k != "options")


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def read_grids(path: Path) -> list[Grid]:
    """The grids (stages) of the file at ``path``; a bad file is a :class:`ConfigError` naming
    it and the key."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except OSError as exc:
        raise ConfigError(f"cannot read grid file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"grid file {path} is not YAML: {str(exc).splitlines()[0]}") from exc
    if not documents:
        raise ConfigError(f"grid file {path} is empty")
    grids = [_grid(path, data, i if len(documents) > 1 else None) for i, data in enumerate(documents)]
    for grid in grids[1:]:
        grid.results = grid.results or grids[0].results
    return grids


def read_grid(path: Path) -> Grid:
    """The file's only grid (a file of stages is refused: :func:`read_grids`)."""
    grids = read_grids(path)
    if len(grids) != 1:
        raise ConfigError(f"grid file {path} holds {len(grids)} stages; expected one")
    return grids[0]


def _grid(path: Path, data: Any, stage: int | None) -> Grid:
    where = f"grid file {path}" + (f", stage {stage + 1}" if stage is not None else "")
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping with grid: and set: sections")
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(FILE_KEYS)}")
    grid = Grid(job=data.get("job", "run"), results=data.get("results"), name=data.get("name") or path.stem)
    axes = data.get("grid") or {}
    subgrids = axes if isinstance(axes, list) and axes else [axes]
    for section, value in [*(("grid", g) for g in subgrids), *((k, data.get(k) or {}) for k in ("set", "slurm", "local"))]:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {section}: must be a mapping of key: value")
    grid.axes = [{k: _as_list(v, k) for k, v in g.items()} for g in subgrids]
    grid.fixed = dict(data.get("set") or {})
    grid.slurm, grid.local = dict(data.get("slurm") or {}), dict(data.get("local") or {})
    check_grid(grid, where=f"{where}: ")
    return grid


def _as_list(value: Any, key: str) -> list[Any]:
    if key == "train_modalities" and value == ALL_SUBSETS:
        return [ALL_SUBSETS]
    return list(value) if isinstance(value, list) else [value]


def grid_from_options(grid: Iterable[str], fixed: Iterable[str], base: Grid | None = None) -> Grid:
    """``--grid key=v1,v2`` and ``--set key=value`` (added to ``base``, a file's grid)."""
    out = dataclasses.replace(base) if base is not None else Grid(name="cli")
    out.axes, out.fixed = [dict(g) for g in out.axes], dict(out.fixed)
    for text in grid:
        key, values = _pair(text, "--grid")
        for axes in out.axes:
            axes[key] = [ALL_SUBSETS] if values == ALL_SUBSETS else [
            yaml.safe_load(v) if key != "train_modalities" else v for v in values.split(",")]
    for text in fixed:
        key, value = _pair(text, "--set")
        out.fixed[key] = value if key in ("train_modalities", "data_root", "checkpoint", "save_checkpoint",
                                          "config") else yaml.safe_load(value)
    check_grid(out, where="")
    return out


def _pair(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ConfigError(f"{option} {text!r}: give KEY=VALUE" + (",VALUE..." if option == "--grid" else ""))
    return key.strip().replace("-", "_"), value.strip()


def check_grid(grid: Grid, where: str) -> None:
    if grid.job not in JOBS:
        raise ConfigError(f"{where}job: {grid.job!r}; choose run or eval")
    swept = [k for axes in grid.axes for k in axes]
    both = sorted(set(swept) & set(grid.fixed))
    if both:
        raise ConfigError(f"{where}{', '.join(both)} both swept (grid) and fixed (set); give it once")
    for key in [*swept, *grid.fixed]:
        if key in SWEEP_OWNED:
            raise ConfigError(f"{where}{key} cannot be set per cell: {SWEEP_OWNED[key]}")
    for axes in grid.axes:
        for key, values in axes.items():
            if not values:
                raise ConfigError(f"{where}grid key {key} has no values")


def expand(grid: Grid) -> list[dict[str, Any]]:
    """Every cell's options: the product of the axes (in their order), with the fixed values;
    ``all-subsets`` becomes every non-empty subset of the cell's data set's modalities."""
    from mlebench.data import dataset_info

    cells = []
    for axes in grid.axes:
        keys = list(axes)
        for values in itertools.product(*(axes[k] for k in keys)):
            options = {**dict(zip(keys, values)), **grid.fixed}
            if options.get("train_modalities") == ALL_SUBSETS:
                info = dataset_info(str(options.get("dataset", "synthetic")))
                mods = list(info.defaults)
                for n in range(1, len(mods) + 1):
                    for subset in itertools.combinations(mods, n):
                        cells.append({**options, "train_modalities": ",".join(subset)})
            else:
                cells.append(options)
    return [_filled(c) for c in cells]


def _filled(options: dict[str, Any]) -> dict[str, Any]:
    """String values with ``{key}`` filled from the cell's other options."""
    scalars = {k: _shown(v) for k, v in options.items() if not isinstance(v, dict)}
    out = {}
    for key, value in options.items():
        if isinstance(value, str) and "{" in value:
            try:
                value = value.format_map(scalars)
            except (KeyError, ValueError, IndexError) as exc:
                raise ConfigError(f"{key}: {value!r} names {exc} , which is not an option of the cell") from exc
        out[key] = value
    return out


def cell_argv(command: click.Command, job: str, options: dict[str, Any]) -> list[str]:
    """The command line of the ``job`` (its click ``command``) that runs a cell with ``options``
    (checked against the command's options: an unknown key is a :class:`ConfigError` naming it)."""
    flags = {opt: p for p in command.params if isinstance(p, click.Option) for opt in p.opts}
    argv = [job]
    for key, value in options.items():
        if key == "options":
            pairs = value.items() if isinstance(value, dict) else [_pair(str(v), "options") for v in _as_list(value, key)]
            for k, v in pairs:
                argv += ["-o", f"{k}={v if isinstance(v, str) else json.dumps(v)}"]
            continue
        flag = "--" + key.replace("_", "-")
        param = flags.get(flag)
        if param is None:
            known = sorted({o[2:].replace("-", "_") for o, p in flags.items() if o.startswith("--") and not p.hidden}
                           - set(SWEEP_OWNED) - {"help", "option"})
            raise ConfigError(f"{key}: not an option of `mlebench {job}`; known: {', '.join(known)}, options")
        if param.is_flag:
            if value not in (True, False):
                raise ConfigError(f"{key}: {value!r}; give true or false")
            argv += [flag] if value else []
        else:
            argv += [flag, _shown(value)]
    return argv


def identify(command: click.Command, to_spec: Callable[[dict[str, Any], str], Any], job: str,
             options: dict[str, Any], data_identity: dict[tuple, dict[str, Any]] | None = None) -> Cell:
    """The cell with ``options``: parsed by the job's click ``command`` and turned into its run by
    ``to_spec`` exactly as the job will (defaults filled in, the whole run checked), its identity
    (the run's configuration and its data's identity) and the hash of that identity.
    ``data_identity`` caches data identities across cells."""
    from mlebench.config import validate_spec

    argv = cell_argv(command, job, options)
    try:
        with command.make_context(job, list(argv[1:]), resilient_parsing=False) as ctx:
            params = dict(ctx.params)
    except click.ClickException as exc:
        raise ConfigError(f"cell {' '.join(f'{k}={_shown(v)}' for k, v in options.items())}: {exc.format_message()}") \
            from exc
    params.pop("seeds", None)
    spec = to_spec(params, params["protocol"])
    validate_spec(spec, "run")
    config = {k: v for k, v in dataclasses.asdict(spec).items() if k not in NOT_IDENTITY}
    identity = {"job": job, "spec": json.loads(json.dumps(config, sort_keys=True, default=str)),
                "data": _data_identity(spec, data_identity if data_identity is not None else {})}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return Cell(job, dict(options), tuple(argv), digest, identity)


def _data_identity(spec: Any, cache: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    """The identity of the split a cell evaluates (:meth:`MultiModalDataset.identity`)."""
    from mlebench.data import dataset_info, load_dataset

    info = dataset_info(spec.dataset)
    modalities = tuple(spec.train_modalities or info.defaults)
    key = (spec.dataset, str(spec.data_root), spec.eval_split, modalities)
    if key not in cache:
        cache[key] = load_dataset(spec.dataset, spec.data_root, spec.eval_split, modalities).identity()
    return cache[key]
