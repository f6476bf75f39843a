"""params.yaml: one section per stage (plus shared top-level keys such as ``seed``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ParamsError(ValueError):
    pass


@dataclass(frozen=True)
class Params:
    data: dict[str, Any]
    source: str = "<dict>"

    @classmethod
    def load(cls, path: Path | str = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
        path = Path(path)
        if not path.exists():
            raise ParamsError(f"{path}: params file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ParamsError(f"{path}: not valid YAML ({e})") from e
        if not isinstance(data, dict):
            raise ParamsError(f"{path}: expected a mapping of sections at the top level")
        params = cls(data, str(path))
        return params.with_overrides(overrides or {})

    def section(self, name: str) -> Any:
        if name not in self.data:
            raise ParamsError(f"{self.source}: missing params section '{name}'")
        return copy.deepcopy(self.data[name])

    def get(self, name: str, default: Any = None) -> Any:
        return copy.deepcopy(self.data.get(name, default))

    def with_overrides(self, overrides: dict[str, Any]) -> Params:
        """Apply dotted overrides such as ``{"chunk.max_tokens": 128}`` (as ``dvc exp run -S`` does)."""
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
