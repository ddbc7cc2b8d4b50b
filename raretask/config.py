"""Typed configuration: dataclasses read from TOML, with dotted overrides and one-line errors.

Every config is a dataclass deriving from `Config`; each field is declared with `option(default, "one-line doc")`.
Loading goes: TOML file -> raw dict -> dotted overrides applied to the raw dict -> typed `from_dict` (unknown keys
and wrong types are errors naming the field) -> `validate()` (cross-field rules). Every failure is a `ConfigError`
whose message names the field; the CLI prints it as one line and exits with status 2.

    cfg = load_config(SynthConfig, "configs/synthetic/default.toml", ["train.lr=3e-3", "sweep.widths=[1,2,4]"])
    cfg.to_toml()          # the resolved config, as written into every run directory
"""

from __future__ import annotations

import dataclasses
import enum
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from raretask import presets


class ConfigError(ValueError):
    """A user mistake in a config or on the command line. The message is one line and names the field."""


def option(default: Any = dataclasses.MISSING, doc: str = "", *, factory: Any = dataclasses.MISSING,
           ge: float | None = None, gt: float | None = None, le: float | None = None) -> Any:
    """A config field with a one-line docstring (shown by `raretask ... keys` and in errors) and optional bounds:
    `ge` (>=), `gt` (>), `le` (<=), checked by `Config.validate` for a number and for every number of a list."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le)) if v is not None}
    return dataclasses.field(default=default, default_factory=factory, metadata={"doc": doc, "bounds": bounds})


_BOUND_CHECKS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b), "le": ("<=", lambda v, b: v <= b)}


def check_bounds(value: Any, bounds: dict[str, float], path: str) -> None:
    """Raise `<path>: must be >= b, got v` for the first bound a number (or a list's number) breaks; None passes."""
    values = value if isinstance(value, list) else [value]
    for kind, b in bounds.items():
        op, holds = _BOUND_CHECKS[kind]
        for v in values:
            if isinstance(v, (int, float)) and not holds(v, b):
                raise ConfigError(f"{path}: must be {op} {b:g}, got {v}")


class StrEnum(str, enum.Enum):
    """String choices in configs: written as their value, parsed case-insensitively."""

    def __str__(self) -> str:
        return self.value


C = TypeVar("C", bound="Config")


@dataclasses.dataclass
class Config:
    """Base class: typed construction from plain dicts, validation, and TOML output."""

    # A subclass may name one `dict[str, Any]` field that collects keys it does not declare (as dotted paths).
    _extra_field: typing.ClassVar[str | None] = None

    def __post_init__(self) -> None:
        # Configs built in Python may pass enum fields as strings; store the enum so `is` comparisons hold.
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            tp = _is_optional(hints[f.name])[1]
            value = getattr(self, f.name)
            if isinstance(tp, type) and issubclass(tp, enum.Enum) and isinstance(value, str) \
                    and not isinstance(value, tp):
                setattr(self, f.name, _convert(value, tp, f.name))

    @classmethod
    def from_dict(cls: type[C], data: Any, path: str = "") -> C:
        if not isinstance(data, dict):
            raise ConfigError(f"{path or 'config'}: expected a table, got {_describe(data)}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key == cls._extra_field and isinstance(value, dict):  # the extra table itself, as written by to_dict
                for k, v in value.items():
                    extra.update(_flatten(v, k))
                continue
            if key not in fields:
                if cls._extra_field is None:
                    raise ConfigError(f"{_join(path, key)}: unknown key (known: {', '.join(sorted(fields))})")
                extra.update(_flatten(value, key))
                continue
            kwargs[key] = _convert(value, hints[key], _join(path, key))
        if cls._extra_field is not None:
            kwargs[cls._extra_field] = extra
        for name, f in fields.items():
            if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{_join(path, name)}: required key is missing")
        return cls(**kwargs)

    def validate(self, path: str = "") -> None:
        """Check each field's declared bounds, then (subclasses, after calling super()) cross-field rules; raise
        `ConfigError` naming the field."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            check_bounds(value, f.metadata.get("bounds", {}), _join(path, f.name))
            if isinstance(value, Config):
                value.validate(_join(path, f.name))
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, Config):
                        item.validate(f"{_join(path, f.name)}[{i}]")

    def to_dict(self) -> dict[str, Any]:
        """Plain TOML-safe dict (enums as strings, None fields left out)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = _plain(getattr(self, f.name))
            if value is None or (f.name == self._extra_field and not value):
                continue
            out[f.name] = value
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    @classmethod
    def field_docs(cls, prefix: str = "") -> list[tuple[str, str, str]]:
        """(dotted key, type, doc) for every field, nested configs included."""
        rows = []
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key, tp = _join(prefix, f.name), hints[f.name]
            sub = _config_type(tp)
            if sub is not None:
                rows.extend(sub.field_docs(key + ("[]" if _is_list(tp) else "")))
            else:
                rows.append((key, _type_name(tp), f.metadata.get("doc", "")))
        return rows


def load_config(cls: type[C], path: str | Path | None, overrides: list[str] = ()) -> C:
    """Read `path` (TOML; None = all defaults), apply `key=value` overrides, build and validate a `cls`."""
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        # Relative paths inside a config are relative to where the user named it, even when the file read is the
        # packaged preset of that name (a wheel install has no ./configs).
        base = path.resolve().parent
        source = path if path.is_file() else presets.find(path)
        if source is None:
            raise ConfigError(f"config file not found: {path} (nor a packaged preset: `raretask presets` lists them)")
        try:
            raw = tomllib.loads(source.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
    for item in overrides:
        apply_override(raw, item)
    cfg = cls.from_dict(raw)
    resolve = getattr(cfg, "resolve_paths", None)
    if resolve is not None:
        resolve(base)
    cfg.validate()
    return cfg


_INDEX = re.compile(r"^([A-Za-z_][\w-]*)((?:\[\d+\])*)$")


def split_key(key: str) -> list[str | int]:
    """'mixture.tasks[0].rank' -> ['mixture', 'tasks', 0, 'rank'] (also accepts 'mixture.tasks.0.rank')."""
    parts: list[str | int] = []
    for token in key.split("."):
        if token.isdigit():
            parts.append(int(token))
            continue
        m = _INDEX.match(token)
        if not m:
            raise ConfigError(f"override key {key!r}: malformed")
        parts.append(m.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return parts


def parse_value(text: str) -> Any:
    """A command-line value: any TOML value (3e-3, [1,2,4], true, "x"); anything else is a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `dotted.key=value` (value in TOML syntax) to a raw config dict in place."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value")
    key, text = item.split("=", 1)
    set_raw(raw, key.strip(), parse_value(text.strip()))


def set_raw(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key in a raw (untyped) config dict, creating tables on the way."""
    parts = split_key(key)
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise ConfigError(f"{key}: index {part} is out of range")
        elif not isinstance(node, dict):
            raise ConfigError(f"{key}: {part} is not inside a table")
        if last:
            node[part] = value
        elif isinstance(part, int):
            node = node[part]
        else:
            node = node.setdefault(part, [] if isinstance(parts[i + 1], int) else {})


def get_path(obj: Any, key: str) -> Any:
    """Read a dotted key from a typed config (raises ConfigError if it does not exist)."""
    node = obj
    for part in split_key(key):
        try:
            node = node[part] if isinstance(part, int) else getattr(node, part)
        except (AttributeError, IndexError, TypeError):
            raise ConfigError(f"{key}: no such config key") from None
    return node


# ----------------------------------------------------------------------------------------------- conversion helpers


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, dict) else "a table"


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    return {prefix: value}


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _is_list(tp: Any) -> bool:
    return typing.get_origin(_is_optional(tp)[1]) is list


def _config_type(tp: Any) -> type[Config] | None:
    tp = _is_optional(tp)[1]
    if typing.get_origin(tp) is list:
        tp = typing.get_args(tp)[0]
    return tp if isinstance(tp, type) and issubclass(tp, Config) else None


def _type_name(tp: Any) -> str:
    optional, inner = _is_optional(tp)
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        name = "|".join(str(m.value) for m in inner)
    elif typing.get_origin(inner) is list:
        name = f"list[{_type_name(typing.get_args(inner)[0])}]"
    elif typing.get_origin(inner) is dict:
        name = "table"
    else:
        name = getattr(inner, "__name__", str(inner))
    return name + (" (optional)" if optional else "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    optional, tp = _is_optional(tp)
    if value is None and optional:
        return None
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if isinstance(tp, type) and issubclass(tp, Config):
        return tp.from_dict(value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {_describe(value)}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table, got {_describe(value)}")
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if isinstance(value, str) and value.lower() == str(member.value).lower():
                return member
        choices = ", ".join(str(m.value) for m in tp)
        raise ConfigError(f"{path}: {value!r} is not one of {choices}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # a programming error, not a user one


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
