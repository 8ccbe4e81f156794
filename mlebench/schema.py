"""Typed schemas of the options a run takes (the ``method``, ``train`` and ``protocol`` sections of
``--config``, ``-o KEY=VALUE`` and ``--weights``), and the checker they all go through.

Each section is checked against a typed schema with pydantic in strict mode (no ``"8"`` for an
integer, no ``true`` for a number, no ``"no"`` for a flag); every problem is one
:class:`~mlebench.errors.ConfigError` line that names the key and the value:

- ``train``: the fields of :class:`~mlebench.config.TrainConfig` with their ranges (in
  :mod:`mlebench.config`, beside the dataclass);
- ``method``: the fields of the method's own configuration dataclass, found from the builder
  the registry holds (:func:`method_option_types`), so every method, a plugin's included, gets
  its own schema;
- ``protocol``: the keyword arguments of the protocol class's ``__init__``.

Numbers in YAML: PyYAML reads YAML 1.1, where ``1e-4`` (no dot) is the *string* ``"1e-4"``. A
string that is a plain decimal float literal (``1e-4``, ``"0.5"``, ``-2.5E+3``) is accepted
where a float is expected and read as that float; anything else (``"fast"``, ``"nan"``) is an
error. Integer and boolean options take no strings at all.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from typing import Annotated, Any, Mapping, Union

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, create_model

from mlebench.errors import ConfigError
from mlebench.protocols import protocol_factory
from mlebench.registry import method_entry

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


def check_section(
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


def type_hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception:  # an annotation that does not resolve: no type information
        return {}


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
        candidate = type_hints(obj.__init__).get("config")
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
    builder = method_entry(name).builder
    schema = _schema_of(builder)
    if schema is None:
        returned = type_hints(builder).get("return")
        schema = _schema_of(returned) if inspect.isclass(returned) else None
    if schema is not None:
        hints = type_hints(schema)
        return schema.__name__, {f.name: hints.get(f.name, Any) for f in dataclasses.fields(schema)}
    parameters = list(inspect.signature(builder).parameters.values())[3:]  # after info, modalities, preset
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    hints = type_hints(builder)
    return name, {p.name: hints.get(p.name, Any) for p in parameters}


def validate_method_options(method: str, options: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    found = method_option_types(method)
    if found is None:
        return dict(options)
    schema, types_ = found
    return check_section(where, "method", options, types_, owner=f" for {method} ({schema})")


def protocol_option_types(name: str) -> dict[str, Any] | None:
    """Option name -> annotation of a protocol (its class's ``__init__`` keywords); None when it
    takes ``**kwargs``."""
    factory = protocol_factory(name)
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    hints = type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    return {p.name: hints.get(p.name, Any) for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL}


def validate_protocol_options(protocol: str, options: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    types_ = protocol_option_types(protocol)
    if types_ is None:
        return dict(options)
    return check_section(where, "protocol", options, types_, owner=f" for {protocol}")
