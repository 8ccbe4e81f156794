"""What the command modules share: the group class that turns errors into one line, the options
several commands take, and the parsing of option values.

Choices that come from the method registry (``--method``, ``--preset``) are read when an option
is parsed or help is shown, not when the command line is imported: the registry loads the
methods' packages (torch, sam2) and the plugins, which a command like ``results list`` never
needs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from mlebench.errors import MlebenchError
from mlebench.signals import Terminated, exit_interrupted


class Group(click.Group):
    """A click group that turns :class:`MlebenchError` into a clean message and exit code, and
    that also holds the commands plugins register for it (``register_command(group)``)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MlebenchError as exc:
            raise click.ClickException(str(exc)) from exc
        except (KeyboardInterrupt, Terminated) as exc:  # Ctrl-C: exit 130, SIGTERM: 143, one line each
            exit_interrupted(exc)

    def _plugin_commands(self) -> dict[str, click.Command]:
        from mlebench.registry import method_commands

        registry_loaded()
        group = None if self.name == "main" else self.name
        return {c.command.name: c.command for c in method_commands() if c.group == group}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or self._plugin_commands().get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The group's commands; a group that methods add to (``bench``) lists theirs too. The
        top level does not load the registry for ``mlebench --help`` (that takes seconds);
        a plugin's top-level command still runs by its name."""
        own = set(super().list_commands(ctx))
        return sorted(own if self.name == "main" else own | set(self._plugin_commands()))

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """click's ``main``, except that Ctrl-C anywhere (parsing, loading plugins) ends in one
        line and status 130, never click's "Aborted!" and status 1."""
        standalone = kwargs.pop("standalone_mode", True)
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt) or isinstance(exc.__context__, KeyboardInterrupt):
                exit_interrupted(KeyboardInterrupt())
            if not standalone:
                raise
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            if not standalone:
                raise
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Exit as exc:
            if not standalone:
                raise
            sys.exit(exc.exit_code)
        except (KeyboardInterrupt, Terminated) as exc:
            exit_interrupted(exc)


_REPORTED: set[str] = set()


def registry_loaded() -> None:
    """Load the method registry; say once, on stderr, which plugins were refused and why."""
    from mlebench.registry import plugin_problems

    for problem in plugin_problems():
        if problem not in _REPORTED:
            _REPORTED.add(problem)
            click.echo(f"Error: {problem}", err=True)


def load_plugins_option(ctx: click.Context, param: click.Parameter, modules: Sequence[str]) -> None:
    """``mlebench --plugin MODULE``: import it now, so that its methods are choices below."""
    from mlebench.registry import load_plugin

    try:
        for module in modules:
            load_plugin(module)
    except MlebenchError as exc:
        raise click.ClickException(str(exc)) from exc


class LazyChoice(click.Choice):
    """A choice whose values come from ``source``, asked each time they are needed (a plugin
    loaded later in the process adds its methods)."""

    def __init__(self, source: Callable[[], Sequence[str]]) -> None:
        self._source = source
        super().__init__(())

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        return tuple(self._source())

    @choices.setter
    def choices(self, _value: Any) -> None:  # click.Choice.__init__ assigns; the source decides
        pass


class RegistryDefault(click.Option):
    """An option whose default is computed (from the registry) and shown as its value in --help."""

    def get_default(self, ctx: click.Context, call: bool = True) -> Any:
        return super().get_default(ctx, call=True)


def _method_names() -> list[str]:
    from mlebench.registry import method_names

    registry_loaded()
    return method_names()


def _all_presets() -> list[str]:
    from mlebench.registry import all_presets

    registry_loaded()
    return all_presets()


def default_method() -> str:
    from mlebench.registry import default_method as registry_default

    registry_loaded()
    return registry_default()


def method_option(**kwargs: Any) -> Callable[[Any], Any]:
    """``--method``: a registered method, the registry's default unless ``required``."""
    if kwargs.get("required"):
        return click.option("--method", "method_name", type=LazyChoice(_method_names), **kwargs)
    return click.option("--method", "method_name", type=LazyChoice(_method_names), default=default_method,
                        show_default=True, cls=RegistryDefault, **kwargs)


def preset_option(default_help: str) -> Callable[[Any], Any]:
    """``--preset``: one of the presets some method offers (the job checks the method's own);
    left out, the method's default as ``default_help`` says."""
    return click.option("--preset", type=LazyChoice(_all_presets), default=None,
                        help=f"Model size (default: {default_help}).")


def _protocol_names() -> list[str]:
    from mlebench.protocols import protocol_names

    return protocol_names()


def protocol_choice() -> click.Choice:
    return LazyChoice(_protocol_names)


def _dataset_names() -> list[str]:
    from mlebench.data import dataset_names

    return dataset_names()


DATASET_OPTION = click.option("--dataset", type=LazyChoice(_dataset_names), default="synthetic", show_default=True,
                              help="Which data set layout to read.")
DATA_ROOT_OPTION = click.option("--data-root", type=click.Path(path_type=Path, file_okay=False), default=None,
                                help="Data set folder (synthetic: generated and cached on first use).")
MODALITIES_OPTION = click.option("--modalities", default=None,
                                 help="Comma-separated modalities (default: the data set's).")
class StoreParam(click.ParamType):
    """``--results``: a file path (an SQLite file) or a database URL (sqlite:///PATH,
    postgresql+psycopg://USER@HOST:PORT/DB); a path stays a :class:`Path`, a URL a string."""

    name = "PATH|URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        if isinstance(value, Path):
            return value
        from mlebench.errors import ConfigError
        from mlebench.results.target import parse_target

        try:
            target = parse_target(str(value))
        except ConfigError as exc:
            self.fail(str(exc).removeprefix(f"--results {str(value)!r}").lstrip(": ") or str(exc), param, ctx)
        if target.path is not None:
            try:
                is_dir = target.path.is_dir()
            except OSError:  # a name too long, say: the command's own guard names it
                is_dir = False
            if is_dir:
                self.fail(f"{target.path} is a directory, not a results file", param, ctx)
            return target.path
        return str(value)


STORE_HELP = ("The results store: an SQLite file, or a database URL (postgresql+psycopg://USER@HOST:PORT/DB) "
              "for jobs on several machines.")
RESULTS_OPTION = click.option("--results", "results_path", type=StoreParam(), default=Path("results.sqlite"),
                              show_default=True, help=STORE_HELP)
GRACE_OPTION = click.option("--grace", default="10m", show_default=True, metavar="DURATION",
                            help="How long a running run may go without a heartbeat before it counts as stale "
                                 "(seconds, or 30s, 10m, 2h).")
DEVICE_OPTION = click.option("--device", default="cpu", show_default=True,
                             help="cpu, cuda, cuda:N or mps (checked before anything runs).")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def parse_modalities(dataset: str, text: str | None, hint: str = "--modalities") -> list[str] | None:
    """``"rgb,depth"`` -> ``["rgb", "depth"]``, checked against the data set (usage error)."""
    if text is None:
        return None
    from mlebench.data import dataset_info

    info = dataset_info(dataset)
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise click.BadParameter(
            f"{text!r} names no modality; give a comma-separated list from {', '.join(info.modality_names)} "
            "(leave the option out for the data set's default)",
            param_hint=hint,
        )
    unknown = [name for name in names if name not in info.modality_names]
    if unknown:
        raise click.BadParameter(
            f"unknown modality {', '.join(map(repr, unknown))} for {dataset}; "
            f"choose from {', '.join(info.modality_names)}",
            param_hint=hint,
        )
    if len(set(names)) != len(names):
        raise click.BadParameter(f"{text!r} names a modality twice", param_hint=hint)
    return names


def parse_split(dataset: str, split: str, hint: str = "--split") -> str:
    from mlebench.data import dataset_info

    info = dataset_info(dataset)
    if split not in info.splits:
        raise click.BadParameter(f"unknown split {split!r}; choose from {', '.join(info.splits)}", param_hint=hint)
    return split


def parse_seeds(text: str | None, hint: str = "--seeds") -> list[int] | None:
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if "" in parts and text.strip():
        raise click.BadParameter(f"{text!r} has an empty entry; give distinct integer seeds, e.g. 0,1,2",
                                 param_hint=hint)
    try:
        seeds = [int(part) for part in parts if part]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers", param_hint=hint) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise click.BadParameter(f"{text!r}: give distinct integer seeds, e.g. 0,1,2", param_hint=hint)
    return seeds


def parse_method_options(items: Sequence[str]) -> dict[str, Any]:
    """``("top_k=1", "router=scalar")`` -> ``{"top_k": 1, "router": "scalar"}`` (values as YAML)."""
    import yaml

    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="-o/--option")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as exc:
            raise click.BadParameter(f"{item!r}: the value is not valid YAML ({exc})", param_hint="-o/--option") from None
    return options


def parse_methods(text: str | None, hint: str = "--methods") -> list[str]:
    """``"mlesam,cmnext"`` -> registered method names (all of them when ``text`` is None)."""
    from mlebench.registry import method_names

    registry_loaded()
    known = method_names()
    methods = [m.strip() for m in text.split(",") if m.strip()] if text else known
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise click.BadParameter(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from "
                                 f"{', '.join(known)}", param_hint=hint)
    return methods


def existing_store(target: Path | str) -> Any:
    """The results store ``target`` names, opened for reading (a file must exist: reading
    creates nothing)."""
    from mlebench.results.store import open_store_for_reading

    if isinstance(target, Path) and not target.exists():
        raise click.BadParameter(f"{target} does not exist", param_hint="--results")
    return open_store_for_reading(target)


def parse_grace(text: str) -> float:
    """``--grace`` in seconds (a usage error names a bad value)."""
    from mlebench.errors import ConfigError
    from mlebench.results.liveness import parse_duration

    try:
        return parse_duration(text)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).removeprefix("--grace "), param_hint="--grace") from exc


def store_name(target: Path | str) -> str:
    """A short name of a store for titles: the file's name, or the database's."""
    from mlebench.results.target import parse_target

    parsed = parse_target(target)
    return parsed.path.name if parsed.path is not None else f"{parsed.url.database} on {parsed.url.host or 'localhost'}"


def progress_options(every: float) -> dict[str, Any]:
    """A bar on stderr when it is a terminal; progress lines on stdout when that is not one (a CI
    log, ``> log``), every ``every`` seconds. (A job silences every rank but 0.)"""
    return {"progress": sys.stderr.isatty(), "report": click.echo if not sys.stdout.isatty() else None,
            "report_every": every}


def announce(dataset: str, root: Path | None) -> Path | None:
    """Say so on stderr before the embedded synthetic set is generated; returns ``root``."""
    from mlebench.data.synthetic import announce_synthetic

    announce_synthetic(dataset, root, lambda msg: click.echo(msg, err=True))
    return root


def apply(options: Sequence[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    """Decorate with ``options`` in the order --help lists them."""

    def decorate(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate
