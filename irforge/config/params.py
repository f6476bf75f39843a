"""params.yaml as data: loading (YAML 1.2 numbers), and the one parser for ``-S key=value`` overrides.

Validation against the typed sections happens in :mod:`irforge.config.sections` (``Config.validate``).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ParamsError(ValueError):
    """params.yaml (or an override) is unreadable, or a value is of the wrong type or out of range."""


class _Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where ``1e-3`` is a string; DVC (ruamel, YAML 1.2) reads it as a number.
    Resolving floats the YAML 1.2 way keeps the two readers of params.yaml in agreement."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*\.?\d*(?:[eE][-+]?\d+)|\d[\d_]*\.\d*|\.\d+(?:[eE][-+]?\d+)?|\.inf|\.nan)$",
               re.IGNORECASE),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["chunk.max_tokens=128", ...]`` -> ``{"chunk.max_tokens": 128}``; values are YAML (lists, null, ...).

    The one parser behind ``irforge run -S``, ``irforge flow -S``, the ablation driver and re-indexing.
    """
    parsed: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"override '{item}': expected KEY=VALUE, e.g. chunk.max_tokens=128")
        try:
            parsed[key.strip()] = load_yaml(value) if value.strip() else None
        except yaml.YAMLError as e:
            raise ParamsError(f"override '{item}': the value is not valid YAML ({e})") from e
    return parsed


@dataclass(frozen=True)
class Params:
    """The raw params mapping (sections by name) and where it came from; :class:`Config` is its typed view."""

    data: dict[str, Any]
    source: str = "<dict>"

    @classmethod
    def load(cls, path: Path | str = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
        path = Path(path)
        if not path.exists():
            raise ParamsError(f"{path}: params file not found")
        try:
            data = load_yaml(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ParamsError(f"{path}: not valid YAML ({e})") from e
        except UnicodeDecodeError as e:
            raise ParamsError(f"{path}: not UTF-8 text (byte {e.start})") from e
        if not isinstance(data, dict):
            raise ParamsError(f"{path}: expected a mapping of sections at the top level")
        return cls(data, str(path)).with_overrides(overrides or {})

    def section(self, name: str) -> Any:
        if name not in self.data:
            raise ParamsError(f"{self.source}: missing params section '{name}'")
        return copy.deepcopy(self.data[name])

    def get(self, name: str, default: Any = None) -> Any:
        return copy.deepcopy(self.data.get(name, default))

    def with_overrides(self, overrides: dict[str, Any]) -> Params:
        """Apply dotted overrides such as ``{"chunk.max_tokens": 128}`` (as ``dvc exp run -S`` does).

        An override may create a key; validation then names it if no section knows it.
        """
        data = copy.deepcopy(self.data)
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    raise ParamsError(f"{self.source}: cannot set '{dotted}': '{key}' is not a section")
            node[leaf] = value
        return Params(data, self.source)
