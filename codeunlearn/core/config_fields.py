"""What a config field is: a typed default plus a one-line doc that code can read.

Every field of every config section is declared with `setting` (a value) or `section` (a nested
section), so `codeunlearn config show` can print each value beside what it means, and a test can
refuse a field without a doc.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Callable
from typing import TypeVar

from codeunlearn.core.errors import ConfigError

T = TypeVar("T")
DOC = "doc"  # the metadata key a field's doc is kept under


def setting(default: T, doc: str) -> T:
    """A dataclass field with `default` and a one-line `doc` (read back by `field_doc`).

    The default must be immutable (a tuple, not a list), as every config section is frozen.
    """
    return dataclasses.field(default=default, metadata={DOC: doc})


def section(factory: Callable[[], T], doc: str) -> T:
    """A nested config section built by `factory` (its class), with a one-line `doc`."""
    return dataclasses.field(default_factory=factory, metadata={DOC: doc})


def field_doc(field: dataclasses.Field) -> str:
    """The one-line doc of a config field; "" when it has none."""
    return str(field.metadata.get(DOC, ""))


def field_docs(cls: type) -> dict[str, str]:
    """`field name -> doc` for every field of a config section, in declaration order."""
    return {field.name: field_doc(field) for field in dataclasses.fields(cls)}


def unknown_choice(key: str, value: object, choices: typing.Sequence[str], what: str) -> ConfigError:
    """The error for a value of the dotted `key` outside its choices: the value, the closest choice
    and all of them."""
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(
        f"{key}={value!r} is not {what}{hint}: use one of {', '.join(choices)} (YAML or --{key})"
    )


def nested_sections(cls: type) -> dict[str, type]:
    """`field name -> section class` for the fields of `cls` that are config sections themselves."""
    hints = typing.get_type_hints(cls)
    return {
        field.name: hints[field.name]
        for field in dataclasses.fields(cls)
        if dataclasses.is_dataclass(hints[field.name])
    }
