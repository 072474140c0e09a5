"""(De)serialization and typed overrides of any config: JSON, dotted keys, ``--set`` items."""

from __future__ import annotations

import dataclasses
import json
import typing

from nst_jax.config.common import ConfigError


# ----------------------------------------------------------------------------- (de)serialization
def to_dict(cfg) -> dict:
  return dataclasses.asdict(cfg)


def to_json(cfg) -> str:
  return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def from_dict(cls, data: dict, *, prefix: str = ""):
  """Rebuilds a (nested) config dataclass from ``to_dict`` output.

  Raises:
    ConfigError: for keys ``cls`` does not have, or values of the wrong type.
  """
  if not isinstance(data, dict):
    raise ConfigError(prefix or cls.__name__, f"expected a JSON object, got {type(data).__name__}")
  hints = typing.get_type_hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(data) - names)
  if unknown:
    raise ConfigError(prefix + unknown[0], f"unknown key in a {cls.__name__}")
  kwargs = {}
  for name, value in data.items():
    hint = hints[name]
    if dataclasses.is_dataclass(hint):
      kwargs[name] = from_dict(hint, value, prefix=f"{prefix}{name}.")
    else:
      kwargs[name] = _coerce(value, hint, prefix + name)
  return cls(**kwargs)


def from_json(cls, text: str):
  """Rebuilds a ``cls`` from ``to_json`` output (ConfigError for bad JSON or unknown keys)."""
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise ConfigError(cls.__name__, f"not a saved config (bad JSON: {e})") from None
  return from_dict(cls, data)


def keys(cfg) -> list[str]:
  """Every dotted key of ``cfg`` (the keys ``override`` and ``--set`` accept)."""
  out = []
  for f in dataclasses.fields(cfg):
    value = getattr(cfg, f.name)
    if dataclasses.is_dataclass(value):
      out += [f"{f.name}.{k}" for k in keys(value)]
    else:
      out.append(f.name)
  return out


# ---------------------------------------------------------------------------------- overrides
def _coerce(value, hint, key: str):
  """Parses a string (or passes a value) to the field's declared type, or raises ConfigError."""
  origin = typing.get_origin(hint)
  try:
    if origin is tuple:
      (item_type, *_rest) = typing.get_args(hint)
      items = value.split(",") if isinstance(value, str) else list(value)
      return tuple(item_type(v.strip() if isinstance(v, str) else v) for v in items if v != "")
    if hint is bool:
      if isinstance(value, str):
        if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
          raise ValueError(value)
        return value.lower() in ("1", "true", "yes")
      if not isinstance(value, (bool, int)):
        raise TypeError(value)
      return bool(value)
    if hint is str and not isinstance(value, str):
      raise TypeError(value)
    if hint is int and isinstance(value, float) and not value.is_integer():
      raise ValueError(value)
    return hint(value)
  except (TypeError, ValueError):
    raise ConfigError(key, f"bad value {value!r}: expected "
                           f"{getattr(hint, '__name__', hint)}") from None


def override(cfg, overrides: dict):
  """Returns ``cfg`` with dotted-key overrides applied, each type-checked against the field.

  Raises:
    ConfigError: for an unknown key (listing the valid ones) or a value of the wrong type.
  """
  for key, value in overrides.items():
    cfg = _override_one(cfg, key.split("."), value, key, cfg)
  return cfg


def _override_one(cfg, parts, value, key, root):
  names = {f.name for f in dataclasses.fields(cfg)}
  current = getattr(cfg, parts[0], None)
  if parts[0] not in names or (len(parts) > 1) != dataclasses.is_dataclass(current):
    raise ConfigError(key, f"unknown config key; valid keys: {', '.join(keys(root))}")
  if len(parts) > 1:
    return dataclasses.replace(cfg, **{parts[0]: _override_one(current, parts[1:], value, key,
                                                               root)})
  hint = typing.get_type_hints(type(cfg))[parts[0]]
  return dataclasses.replace(cfg, **{parts[0]: _coerce(value, hint, key)})


def parse_assignments(items) -> dict[str, str]:
  """``["a.b=1", "c=x"]`` (``--set`` values) -> ``{"a.b": "1", "c": "x"}``."""
  out = {}
  for item in items or ():
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise ConfigError(item, "expected KEY=VALUE")
    out[key.strip()] = value.strip()
  return out
