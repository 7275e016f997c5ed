"""Refuse unknown setting names, by name, with the valid names near them.

pydantic-settings reads only the environment variables it knows, so a typo such as
``SMAINT_GATEWAY_MQTT_HSOT`` would silently run on the default. Both services check every
variable with their prefix (and every key of a settings file) against their settings model.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class UnknownSettingError(ValueError):
    """A setting name (environment variable or file key) that the service does not have."""


def _section(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    """The nested section model of field ``name``, or None for a plain value."""
    annotation = model.model_fields[name].annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def setting_paths(model: type[BaseModel]) -> list[tuple[str, ...]]:
    """Every leaf setting as a path of names, e.g. ("mqtt", "host")."""
    paths: list[tuple[str, ...]] = []
    for name in model.model_fields:
        section = _section(model, name)
        paths.extend((name, *sub) for sub in setting_paths(section)) if section else paths.append(
            (name,))
    return paths


def unknown_paths(model: type[BaseModel], data: Mapping[str, Any],
                  prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The paths in ``data`` (nested mappings) that ``model`` does not have."""
    unknown: list[tuple[str, ...]] = []
    for key, value in data.items():
        if key not in model.model_fields:
            unknown.append((*prefix, key))
            continue
        section = _section(model, key)
        if section is not None and isinstance(value, Mapping):
            unknown.extend(unknown_paths(section, value, (*prefix, key)))
    return unknown


def _near(model: type[BaseModel], path: tuple[str, ...]) -> tuple[tuple[str, ...], list[str]]:
    """The deepest section ``path`` names correctly, and that section's keys."""
    here: tuple[str, ...] = ()
    for name in path[:-1]:
        section = _section(model, name) if name in model.model_fields else None
        if section is None:
            break
        model, here = section, (*here, name)
    return here, list(model.model_fields)


def describe(model: type[BaseModel], path: tuple[str, ...], spell: Callable[[Iterable[str]], str],
             where: str, section_mark: str) -> str:
    """The error text for one unknown ``path``; ``spell`` writes a path the way the user does."""
    known = [spell(p) for p in setting_paths(model)]
    close = difflib.get_close_matches(spell(path), known, n=3, cutoff=0.6)
    here, keys = _near(model, path)
    inner = model
    for name in here:
        inner = _section(inner, name) or inner
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    valid = ", ".join(spell((*here, k)) + (section_mark if _section(inner, k) else "")
                      for k in keys)
    return f"unknown setting {spell(path)} {where}: {hint}valid names here: {valid}"


def check_mapping(model: type[BaseModel], data: Mapping[str, Any], where: str) -> None:
    """UnknownSettingError naming every key of a settings file the model does not have."""
    errors = [describe(model, p, ".".join, where, ".*")
              for p in unknown_paths(model, data)]
    if errors:
        raise UnknownSettingError("\n".join(errors))


def check_environment(model: type[BaseModel], prefix: str, environ: Mapping[str, str],
                      delimiter: str = "__", allowed: Collection[str] = ()) -> None:
    """UnknownSettingError naming every ``prefix*`` variable the model does not have."""
    upper = prefix.upper()
    nested: dict[str, Any] = {}
    for var in environ:
        if not var.upper().startswith(upper) or var.upper() in {a.upper() for a in allowed}:
            continue
        node = nested
        *sections, leaf = var[len(prefix):].lower().split(delimiter)
        for name in sections:
            child = node.setdefault(name, {})
            node = child if isinstance(child, dict) else {}
        node.setdefault(leaf, "")

    def spell(path: Iterable[str]) -> str:
        return upper + delimiter.join(path).upper()

    errors = [describe(model, p, spell, "in the environment", delimiter + "*")
              for p in unknown_paths(model, nested)]
    if errors:
        raise UnknownSettingError("\n".join(errors) + f"\n(sections are joined with "
                                  f"'{delimiter}', e.g. {spell(setting_paths(model)[-1])})")


class LoggingSettings(BaseModel):
    """How a service logs: the same section for the gateway and the cloud."""

    model_config = ConfigDict(extra="forbid")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="root log level"
    )
    json_lines: bool = Field(default=False, description="log JSON lines instead of text")
