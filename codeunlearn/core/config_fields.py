"""What a config field is: a typed default plus a one-line doc that code can read.

Every field of every config section is declared with `setting` (a value) or `section` (a nested
section), so `codeunlearn config show` can print each value beside what it means, and a test can
refuse a field without a doc. Settings taken out since are listed in `REMOVED_SETTINGS`, so that a
config naming one is refused with the reason and records saved while it existed are still read.
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


@dataclasses.dataclass(frozen=True)
class RemovedSetting:
    """A setting that was removed: the value it had by default, which is what the code does now, why
    it went, and the removed setting of its section without which it had no effect ("" if none)."""

    default: object
    reason: str
    needs: str = ""


# `section -> key -> RemovedSetting`. Settings that no measurement showed to help are removed rather than
# kept as knobs; saved models, training stamps and sweep keys made while they existed still hold them.
REMOVED_SETTINGS: dict[str, dict[str, RemovedSetting]] = {
    "mining": {
        "rank_past_p_value": RemovedSetting(
            False, "measured on fortunes, it did not help: docs/results/sweep.md, variant F1"
        ),
    },
    "bottleneck": {
        "use_sae": RemovedSetting(False, "the SAE-codebook variant: no measurement showed it helps"),
        "sae_dim": RemovedSetting(0, "the SAE-codebook variant's width, which went with it", needs="use_sae"),
        "l1_coef": RemovedSetting(
            1e-3, "the SAE-codebook variant's L1 weight, which went with it", needs="use_sae"
        ),
    },
}


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


def removed_setting_error(section: str, key: str) -> ConfigError | None:
    """The error for a config that names `section.key`, when that setting was removed; None otherwise."""
    removed = REMOVED_SETTINGS.get(section, {}).get(key)
    if removed is None:
        return None
    return ConfigError(
        f"{section}.{key} was removed ({removed.reason}): delete it from the config; what runs now is "
        f"its old default, {removed.default!r}. An older release still has it (git log -S {key})"
    )


def removed_in_effect(section: str, values: typing.Mapping[str, typing.Any]) -> list[str]:
    """The removed settings that `values`, a section saved while they existed, holds in effect: away
    from their old default (and, for one that `needs` another, with that one away from its default too).
    Values without any describe what the code does now."""
    removed = REMOVED_SETTINGS.get(section, {})

    def is_set(key: str) -> bool:
        return key in values and values[key] != removed[key].default

    return [
        key
        for key, setting in removed.items()
        if is_set(key) and (not setting.needs or is_set(setting.needs))
    ]


def with_removed_defaults(section: str, values: dict[str, typing.Any]) -> dict[str, typing.Any]:
    """A section's values with its removed settings added at their old defaults: what a digest of the
    section (a sweep's key) hashes, so that results made while those settings existed still match."""
    return {key: removed.default for key, removed in REMOVED_SETTINGS.get(section, {}).items()} | values


def nested_sections(cls: type) -> dict[str, type]:
    """`field name -> section class` for the fields of `cls` that are config sections themselves."""
    hints = typing.get_type_hints(cls)
    return {
        field.name: hints[field.name]
        for field in dataclasses.fields(cls)
        if dataclasses.is_dataclass(hints[field.name])
    }
