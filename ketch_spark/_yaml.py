"""YAML loading that refuses duplicate keys (PyYAML silently keeps the last one)."""

from __future__ import annotations

import json
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from ketch_spark.errors import ConfigError

__all__ = ["load_yaml_file", "unknown_keys"]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader whose mappings reject a key given twice."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a plain value, found a {type(key).__name__}", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {seen[key] + 1}, again at line {key_node.start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_yaml_file(path: str | Path, error_cls: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """Reads a YAML file whose top level is a mapping.

    Args:
        path: File to read.
        error_cls: ConfigError subclass raised on any problem.

    Returns:
        The parsed mapping (empty when the file is empty).

    Raises:
        ConfigError: The file is missing, is not UTF-8 or not valid YAML, repeats a key or is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise error_cls(f"{path}: file not found; pass an existing YAML file (see conf/ in the repository)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error_cls(f"{path}: not UTF-8 text (byte {exc.start} cannot be decoded); save the file as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise error_cls(f"{path}: invalid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error_cls(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    return data


def unknown_keys(mapping: Mapping[Any, Any], allowed: Iterable[str]) -> list[str]:
    """The keys of ``mapping`` not in ``allowed``, sorted, as text for a message (a YAML key may be a number or null)."""
    known = set(allowed)
    return sorted(key if isinstance(key, str) else json.dumps(key, default=str) for key in mapping if key not in known)
