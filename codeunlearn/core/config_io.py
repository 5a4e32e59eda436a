"""Reading and writing a `RunConfig`: YAML and dotted overrides in, checked field by field against the
types; plain data, flat parameters and commented YAML out."""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from codeunlearn.core.config_fields import field_doc, removed_setting_error
from codeunlearn.core.errors import ConfigError
from codeunlearn.core.run_config import RunConfig

# `config show` pads a field's entry to this width before its doc, so the docs of a section line up
# unless an entry is longer.
DOC_COLUMN = 36


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> RunConfig:
    """Build a RunConfig from an optional YAML file and `section.key=value` overrides.

    Raises:
        ConfigError: an unknown key (naming the closest valid one, or why it was removed), a wrongly
            typed value, or a missing or unreadable file.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist: pass the path of a YAML file")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(error)}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
    _clear_default_label(raw)  # a file that names keywords needs no label: null
    for override in overrides:
        _apply_override(raw, override)
    override_keys = {o.lstrip("-").partition("=")[0] for o in overrides}
    if "topic.label" not in override_keys and override_keys & {
        "topic.keywords",
        "topic.regex",
        "topic.examples_file",
    }:
        raw["topic"]["label"] = None  # a topic given on the command line replaces the file's or default label
    config = _build(RunConfig, raw, prefix="")
    config.validate()
    return config


def with_overrides(config: RunConfig, overrides: typing.Sequence[str]) -> RunConfig:
    """A copy of `config` with `section.key=value` overrides applied and checked, as on the command line.

    Raises:
        ConfigError: an unknown key or a wrongly typed value.
    """
    raw = config_to_dict(config)
    for override in overrides:
        _apply_override(raw, override)
    updated = _build(RunConfig, raw, prefix="")
    updated.validate()
    return updated


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as plain YAML-safe data (tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def save_config(config: RunConfig, path: Path) -> None:
    """Write the config as YAML for the record (a run directory's config.yaml), its tracking URIs'
    credentials replaced by `***`: a run directory is shared more freely than the secrets it ran with."""
    redacted = dataclasses.replace(config, tracking=config.tracking.redacted())
    path.write_text(yaml.safe_dump(config_to_dict(redacted), sort_keys=False))


def flatten_config(config: RunConfig) -> dict[str, Any]:
    """`section.key -> value` pairs, for logging as flat parameters."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}{key}." if isinstance(sub, dict) else f"{prefix}{key}", sub)
        else:
            flat[prefix] = value

    for key, value in config_to_dict(config).items():
        walk(f"{key}." if isinstance(value, dict) else key, value)
    return flat


def commented_yaml(config: Any) -> str:
    """The config as YAML with each field's one-line doc as a comment: beside a value, above a section.

    `yaml.safe_load` of the text gives `config_to_dict(config)` back.
    """
    return "\n".join(_commented_lines(config, indent="")) + "\n"


def _commented_lines(config: Any, indent: str) -> list[str]:
    entries = [
        (field, getattr(config, field.name), _yaml_entry(field.name, getattr(config, field.name)))
        for field in dataclasses.fields(config)
    ]
    width = max(
        [len(entry) for _, value, entry in entries if entry is not None and len(entry) <= DOC_COLUMN] or [0]
    )
    lines = []
    for field, value, entry in entries:
        if entry is None:  # a nested section: its doc above its key, its fields indented below
            lines += ["", f"{indent}# {field_doc(field)}", f"{indent}{field.name}:"]
            lines += _commented_lines(value, indent + "  ")
        else:
            lines.append(f"{indent}{entry.ljust(width)}  # {field_doc(field)}")
    return lines


def _yaml_entry(key: str, value: Any) -> str | None:
    """`key: value` on one line; None for a nested section."""
    if dataclasses.is_dataclass(value):
        return None
    if isinstance(value, str) and "\n" in value:
        return f"{key}: {json.dumps(value)}"  # a JSON string is a YAML double-quoted scalar, on one line
    text = yaml.safe_dump({key: _plain(value)}, default_flow_style=True, width=float("inf"), sort_keys=False)
    return text.strip()[1:-1]  # drop the braces of the one-entry flow mapping


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What the YAML parser objects to and where, on one line."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(error, 'problem', None) or error}{where}"


def _clear_default_label(raw: dict[str, Any]) -> None:
    """A topic given by keywords, regex or examples replaces the default label topic."""
    topic = raw.get("topic")
    others = ("keywords", "regex", "examples_file")
    if isinstance(topic, dict) and "label" not in topic and any(topic.get(key) for key in others):
        topic["label"] = None


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.lstrip("-").partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not of the form section.key=value")
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError as error:
        raise ConfigError(
            f"override {override!r}: the value is not valid YAML ({_yaml_problem(error)}): close its "
            "brackets and quotes, e.g. 'topic.keywords=[love, hate]'"
        ) from None


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            removed = removed_setting_error(prefix.rstrip("."), key)
            if removed is not None:
                raise removed
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value or {}, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, name)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_coerce(item, args[0], name) for item in items)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "3e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{name}={value!r} is a {type(value).__name__}, but it must be a {hint.__name__}")
    return value
