"""Nested dicts (as TOML gives) <-> config dataclasses, TOML files and `--set` overrides.

Every key is checked against the dataclass it lands in: an unknown key lists the valid ones
with the closest match, a value of the wrong type names the key path and what it must be.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..errors import ConfigError


def _type_name(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    tp = args[0] if args else tp
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _coerce(path: str, tp: Any, value: Any) -> Any:
    """Check a TOML value against the field's annotated type (ints are accepted as floats)."""
    optional = type(None) in typing.get_args(tp)
    base = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
    if value is None and optional:
        return None
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = math.isfinite(value)
    elif base is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - all fields are scalars or tables
        ok = True
    if not ok:
        raise ConfigError(f"{path}: must be {_type_name(tp)}, got {value!r}")
    return value


class ParamTable(Mapping[str, Any]):
    """A parameter table ([local.params], ...): read-only and hashable, as the frozen config
    that holds it; equal to any mapping with the same items."""

    def __init__(self, items: Any = ()):
        self._items = dict(items)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._items.items())))

    def __repr__(self) -> str:
        return repr(self._items)


def _params_table(path: str, value: Any) -> ParamTable:
    """A parameter table from TOML: names to scalars; the registry that reads it checks the
    names and the values."""
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: must be a table [{path}] of name = value, got {value!r}")
    for key, v in value.items():
        scalar = isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v))
        if not scalar:
            raise ConfigError(f"{path}.{key}: must be a number, a string or true/false, got {v!r}")
    return ParamTable(value)


def _unknown_key(path: str, key: str, valid: list[str], source: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=2, cutoff=0.5)
    full = (lambda k: f"{path}.{k}") if path else (lambda k: k)
    hint = f" (did you mean {' or '.join(repr(full(c)) for c in close)}?)" if close else ""
    where = full(key)
    return ConfigError(f"{source}: unknown key {where!r}{hint}; valid keys: {', '.join(valid)}")


def fold_params(cls: type, raw: dict[str, Any], path: str) -> dict[str, Any]:
    """`raw` for the section `cls` with the entries of its params table that have a flat key
    (`cls.flat_params`: [local] rho, [topology] k, ...) moved to that key, so that each parameter
    has one home; the same parameter given both ways with different values is an error."""
    flat, params = getattr(cls, "flat_params", ()), raw.get("params")
    if not isinstance(params, dict) or not any(k in flat for k in params):
        return raw
    raw, params = dict(raw), dict(params)
    for key in [k for k in params if k in flat]:
        value = params.pop(key)
        if key in raw and raw[key] != value:
            raise ConfigError(f"{path}.params.{key}: given twice, as {path}.{key} = {raw[key]!r} and "
                              f"{path}.params.{key} = {value!r}; keep one")
        raw[key] = value
    raw["params"] = params
    return raw


def fold_sections(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` (a whole config for `cls`) with `fold_params` applied to each of its sections."""
    hints = typing.get_type_hints(cls)
    return {k: fold_params(hints[k], v, k) if dataclasses.is_dataclass(hints.get(k)) and isinstance(v, dict) else v
            for k, v in raw.items()}


def build(cls: type, raw: dict[str, Any], path: str, source: str) -> Any:
    """The dataclass `cls` from a nested dict, every key and value checked (`path`: where `raw`
    sits in the config, for messages; `source`: the file or caller, for unknown keys)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in fold_params(cls, raw, path).items():
        if key not in fields:
            raise _unknown_key(path, key, list(fields), source)
        tp = hints[key]
        sub = f"{path}.{key}" if path else key
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{sub}: must be a table [{sub}], got {value!r}")
            kwargs[key] = build(tp, value, sub, source)
        elif typing.get_origin(tp) is Mapping:
            kwargs[key] = _params_table(sub, value)
        else:
            kwargs[key] = _coerce(sub, tp, value)
    return cls(**kwargs)


def canonical_key(cls: type, dotted: str) -> str:
    """The key a dotted override sets in the config `cls`: "local.params.rho" is "local.rho"
    (the parameter's flat key), so that an override replaces the value however the file gave it."""
    section, _, rest = dotted.partition(".")
    name = rest.removeprefix("params.")
    hints = typing.get_type_hints(cls)
    sub = hints.get(section)
    if rest.startswith("params.") and dataclasses.is_dataclass(sub) and name in getattr(sub, "flat_params", ()):
        return f"{section}.{name}"
    return dotted


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested dict of a config; None values and empty parameter tables are dropped (TOML has no
    null)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out[f.name] = to_dict(v)
        elif isinstance(v, Mapping):
            if v:
                out[f.name] = dict(v)
        elif v is not None:
            out[f.name] = v
    return out


def parse_value(text: str) -> Any:
    """Parse an override's value as a TOML value; bare words are strings (ring, sam)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_dotted(raw: dict[str, Any], changes: dict[str, Any], source: str) -> dict[str, Any]:
    """Set {dotted key: value} in a nested dict (in place; returned for chaining)."""
    for key, value in changes.items():
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: {key!r} is not a section key")
            node = child
        node[parts[-1]] = value
    return raw


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a one-line ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None


def dumps_toml(data: dict[str, Any]) -> str:
    """Write a nested dict of scalars / lists / tables as TOML (enough for configs)."""
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return repr(v)

    def table(d: dict[str, Any], name: str) -> list[str]:
        lines = ([f"[{name}]"] if name else []) + [f"{k} = {fmt(v)}" for k, v in d.items() if not isinstance(v, dict)]
        for k, v in d.items():
            if isinstance(v, dict):
                lines += [""] + table(v, f"{name}.{k}" if name else k)
        return lines

    return "\n".join(table(data, "")) + "\n"
