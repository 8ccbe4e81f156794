"""The registry of segmentation methods, and the plugins that fill it.

A method is a builder ``f(info, modalities, preset, **options) -> SegmentationMethod`` decorated
by :func:`register_method`; :func:`build_method` is the one way in (timm's ``create_model``
pattern), and everything the suite needs to know about a method besides its model — presets,
the option ``--weights`` sets, its tiny stand-in, the default method — is read from its
:class:`MethodEntry` here, never from the method's package.

Methods arrive as plugins, the built-in ones included:

- every installed package that declares an entry point in the group ``mlebench.methods``
  (``[project.entry-points."mlebench.methods"]`` in its ``pyproject.toml``; the target is a
  module whose import registers its methods, or a callable that does when called);
- every module named in ``MLEBENCH_PLUGINS`` (comma-separated), or with ``mlebench --plugin
  MODULE``, for code that is not installed.

The built-in entry points (this distribution's own) load first, so a plugin can never replace a
built-in method. A plugin that fails to import, or that registers a name another plugin holds,
is refused whole (none of its methods stay registered) and recorded as one line naming it
(:func:`plugin_problems`); every other method keeps working.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, Iterator, Sequence

from mlebench.data.base import DatasetInfo
from mlebench.errors import ConfigError, MlebenchError
from mlebench.method import SegmentationMethod, StandIn

ENTRY_POINT_GROUP = "mlebench.methods"
PLUGINS_ENV = "MLEBENCH_PLUGINS"
#: the distribution whose entry points are the built-in methods (loaded first)
BUILTIN_DISTRIBUTION = "mlebench"
#: the presets a method offers unless it registers others, smallest first
PRESETS = ("tiny", "paper")

MethodBuilder = Callable[..., SegmentationMethod]


class PluginError(MlebenchError):
    """A plugin could not be loaded; the message names it and says why."""


@dataclass(frozen=True)
class MethodEntry:
    """What the registry knows of one method.

    ``presets`` smallest first: the first is the default of ``run``/``train``/``eval`` (CPU
    scale), the last the full size ``params`` shows by default. ``weights_option`` the builder
    option ``--weights PATH`` sets (None: the method takes no weights file). ``stand_in`` the
    pre-trained backbone its smallest preset loads. ``plugin`` who registered it.
    """

    name: str
    builder: MethodBuilder
    presets: tuple[str, ...]
    weights_option: str | None
    stand_in: StandIn | None
    plugin: str

    @property
    def default_preset(self) -> str:
        return self.presets[0]

    @property
    def full_preset(self) -> str:
        return self.presets[-1]


@dataclass(frozen=True)
class MethodCommand:
    """A click command a plugin adds to ``mlebench`` (``group`` None) or to a group (``"bench"``)."""

    group: str | None
    command: Any
    plugin: str


class _Registry:
    def __init__(self) -> None:
        self.methods: dict[str, MethodEntry] = {}
        self.commands: list[MethodCommand] = []
        self.default: str | None = None
        self.problems: dict[str, str] = {}  # plugin label -> why it was refused
        self.loaded = False
        self.loading: str | None = None  # the plugin whose code is running now


_REGISTRY = _Registry()


def _current_plugin(builder: Any) -> str:
    return _REGISTRY.loading or getattr(builder, "__module__", "?").split(".")[0]


def register_method(name: str, weights_option: str | None = None, default: bool = False,
                    stand_in: StandIn | None = None,
                    presets: Sequence[str] = PRESETS) -> Callable[[MethodBuilder], MethodBuilder]:
    """Register a builder ``f(info, modalities, preset, **options) -> SegmentationMethod``.

    ``weights_option`` names the builder option that takes pretrained or frozen weights (a
    path, or None for a seeded random init): where the generic ``--weights PATH`` goes.
    ``default``: the method the CLI runs and reports compare against when none is named (one
    method only: the suite's subject, MLE-SAM). ``stand_in``: the pre-trained backbone its
    smallest preset loads through ``weights_option``. ``presets``: the presets the builder
    accepts, smallest first.
    """
    presets = tuple(presets)
    if not presets:
        raise ConfigError(f"method {name!r} registers no preset")
    if stand_in is not None and weights_option is None:
        raise ConfigError(f"method {name!r}: a stand-in needs a weights option to load it")

    def decorator(builder: MethodBuilder) -> MethodBuilder:
        plugin = _current_plugin(builder)
        existing = _REGISTRY.methods.get(name)
        if existing is not None:
            raise PluginError(f"method {name!r} is already registered by plugin {existing.plugin!r}")
        if default and _REGISTRY.default is not None:
            raise PluginError(f"method {name!r} claims to be the default method, which is "
                              f"{_REGISTRY.default!r} already")
        _REGISTRY.methods[name] = MethodEntry(name, builder, presets, weights_option, stand_in, plugin)
        if default:
            _REGISTRY.default = name
        return builder

    return decorator


def register_command(group: str | None = None) -> Callable[[Any], Any]:
    """Register a method's own CLI command (a click command) under ``mlebench`` or a group
    (``"bench"``); the CLI adds every registered command."""

    def decorator(command: Any) -> Any:
        _REGISTRY.commands.append(MethodCommand(group, command, _current_plugin(command)))
        return command

    return decorator


# --------------------------------------------------------------------------------------------
# plugins
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _loading(label: str) -> Iterator[None]:
    """Run a plugin's code; on failure forget everything it registered and raise PluginError."""
    before_methods, before_commands, before_default = set(_REGISTRY.methods), len(_REGISTRY.commands), _REGISTRY.default
    outer, _REGISTRY.loading = _REGISTRY.loading, label
    try:
        yield
    except Exception as exc:  # noqa: BLE001  (an import can raise anything)
        for name in set(_REGISTRY.methods) - before_methods:
            del _REGISTRY.methods[name]
        del _REGISTRY.commands[before_commands:]
        _REGISTRY.default = before_default
        reason = str(exc) if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}"
        raise PluginError(f"plugin {label!r} not loaded: {reason}") from exc
    finally:
        _REGISTRY.loading = outer


def _run_target(target: Any) -> None:
    """An entry point's target: a module registers on import; a callable when called."""
    if callable(target) and not inspect.ismodule(target):
        target()


def load_plugin(module: str) -> None:
    """Import ``module`` (``--plugin`` / ``MLEBENCH_PLUGINS``) so that its methods register.

    Raises :class:`PluginError` naming the module when it cannot be imported or registers a
    name that exists; nothing it registered stays then."""
    module = module.strip()
    if not module:
        return
    load_plugins()  # the built-ins first: a plugin cannot take their names
    if module in _REGISTRY.problems:
        raise PluginError(_REGISTRY.problems[module])
    with _loading(module):
        target = importlib.import_module(module.split(":")[0])
        if ":" in module:
            _run_target(getattr(target, module.split(":", 1)[1]))


def _entry_points() -> list[tuple[bool, metadata.EntryPoint]]:
    """(built-in?, entry point) of every distribution on the path, built-ins first.

    Every distribution's metadata is read, not only the first of each name that
    ``metadata.entry_points()`` keeps: an editable checkout leaves a ``*.egg-info`` folder in
    the source tree, which shadows the installed metadata when Python runs from there."""
    found: dict[tuple[str, str], tuple[bool, metadata.EntryPoint]] = {}
    for dist in metadata.distributions():
        builtin = (dist.metadata["Name"] or "") == BUILTIN_DISTRIBUTION
        for ep in dist.entry_points.select(group=ENTRY_POINT_GROUP):
            found.setdefault((ep.name, ep.value), (builtin, ep))
    return sorted(found.values(), key=lambda item: (not item[0], item[1].name))


def load_plugins() -> None:
    """Load every installed plugin and every module in ``MLEBENCH_PLUGINS``, once per process.

    A plugin that fails is recorded (:func:`plugin_problems`) and the others load."""
    if _REGISTRY.loaded:
        return
    _REGISTRY.loaded = True
    for _, ep in _entry_points():
        label = ep.name
        try:
            with _loading(label):
                _run_target(ep.load())
        except PluginError as exc:
            _REGISTRY.problems[label] = f"{exc} (entry point {ENTRY_POINT_GROUP}: {ep.name} = {ep.value})"
    for module in os.environ.get(PLUGINS_ENV, "").split(","):
        if module.strip():
            try:
                load_plugin(module)
            except PluginError as exc:
                _REGISTRY.problems[module.strip()] = f"{exc} (from {PLUGINS_ENV})"


def plugin_problems() -> list[str]:
    """One line per plugin that was refused (after :func:`load_plugins`)."""
    load_plugins()
    return list(_REGISTRY.problems.values())


# --------------------------------------------------------------------------------------------
# queries
# --------------------------------------------------------------------------------------------
def method_names() -> list[str]:
    load_plugins()
    return sorted(_REGISTRY.methods)


def _unknown(name: str) -> ConfigError:
    known = ", ".join(sorted(_REGISTRY.methods)) or "(none)"
    refused = f"; refused plugins: {'; '.join(_REGISTRY.problems.values())}" if _REGISTRY.problems else ""
    return ConfigError(f"unknown method {name!r}; known: {known}{refused}")


def method_entry(name: str) -> MethodEntry:
    """The registry's entry of method ``name``; an unknown name is an error listing the known."""
    load_plugins()
    if name not in _REGISTRY.methods:
        raise _unknown(name)
    return _REGISTRY.methods[name]


def default_method() -> str:
    """The method registered with ``default=True`` (the suite's subject), else the first name."""
    load_plugins()
    if _REGISTRY.default is not None:
        return _REGISTRY.default
    if not _REGISTRY.methods:
        raise _unknown("(default)")
    return sorted(_REGISTRY.methods)[0]


def all_presets() -> list[str]:
    """Every preset some method offers, in registration order (for the CLI's choices)."""
    load_plugins()
    seen: dict[str, None] = {}
    for entry in _REGISTRY.methods.values():
        seen.update(dict.fromkeys(entry.presets))
    return list(seen)


def method_commands() -> list[MethodCommand]:
    load_plugins()
    return list(_REGISTRY.commands)


def build_method(
    name: str,
    dataset_info: DatasetInfo,
    modalities: Sequence[str],
    preset: str | None = None,
    **overrides: Any,
) -> SegmentationMethod:
    """Build a registered method (``preset`` None: its default preset); unknown names, presets
    and options are errors that list the choices."""
    entry = method_entry(name)
    preset = entry.default_preset if preset is None else preset
    if preset not in entry.presets:
        raise ConfigError(f"method {name!r} has no preset {preset!r}; known: {', '.join(entry.presets)}")
    for modality in modalities:
        dataset_info.modality(modality)
    accepted = inspect.signature(entry.builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(overrides) - set(accepted))
        if unknown:
            raise ConfigError(f"method {name!r} does not take option(s) {', '.join(unknown)}")
    method = entry.builder(dataset_info, modalities, preset, **overrides)
    if not isinstance(method, SegmentationMethod):
        raise ConfigError(f"method {name!r} (plugin {entry.plugin!r}): its builder returned "
                          f"{type(method).__name__}, not a SegmentationMethod")
    method.method_name = name
    return method
