"""Typed experiment configs from YAML: dataclasses filled from a mapping, strictly.

A config file is read into nested dataclasses; a key the dataclass does not have, or a value of the
wrong type, is an error that names the key's full path (``sft.lr: expected float, got 'fast'``), so a
typo never silently falls back to a default. Integers are accepted where floats are expected.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def load_config(cls: type[T], source: str | Path | dict[str, Any] | None) -> T:
    """An instance of dataclass ``cls`` from a YAML file path, a mapping, or None (all defaults)."""
    if source is None:
        return cls()
    if isinstance(source, (str, Path)):
        import yaml

        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"config file {path} does not exist.")
        source = yaml.safe_load(path.read_text()) or {}
    return _build(cls, source, "")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping of {cls.__name__} fields, got {data!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"{where + '.' if where else ''}{unknown[0]}: unknown key; valid keys are {sorted(fields)}.")
    kwargs = {k: _value(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where or 'config'}: {err}") from err


def _value(tp: Any, v: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _value(option, v, where)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0])
    if dataclasses.is_dataclass(tp):
        return _build(tp, v, where)
    if origin in (list, tuple):
        if not isinstance(v, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {v!r}.")
        item = args[0] if args else Any
        out = [_value(item, x, f"{where}[{i}]") for i, x in enumerate(v)]
        return out if origin is list else tuple(out)
    if origin is dict:
        if not isinstance(v, dict):
            raise ValueError(f"{where}: expected a mapping, got {v!r}.")
        kt, vt = args or (Any, Any)
        return {_value(kt, k, where): _value(vt, x, f"{where}.{k}") for k, x in v.items()}
    if origin is typing.Literal:
        if v not in args:
            raise ValueError(f"{where}: {v!r} is not one of {list(args)}.")
        return v
    if tp is Any:
        return v
    if tp is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if tp in (int, float, str, bool):
        if not isinstance(v, tp) or (tp is int and isinstance(v, bool)):
            raise ValueError(f"{where}: expected {tp.__name__}, got {v!r}.")
        return v
    raise TypeError(f"{where}: config field type {tp!r} is not supported.")
