"""The stage registry and the DAG derived from it.

Every module of the ``stages`` package that declares ``STAGE`` is a stage (found, not listed). From the
declarations and the validated params, :func:`nodes` gives one node per stage run (a stage with variants
gives one per variant), each with its inputs bound to the outputs that produce them and the nodes it must
wait for, in a topological order. dvc.yaml (:mod:`irforge.engine.dvc`), the Prefect flow and the
ablation driver all read this one DAG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from irforge.config import CORE_SECTIONS, Config, Params, Section, parse_overrides
from irforge.contract import owned
from irforge.contract.stage import BoundOutput, Stage
from irforge.engine.code import code_paths
from irforge.runtime.discovery import declarations

STAGES_PACKAGE = "stages"


class DagError(ValueError):
    """The stage declarations do not form a DAG (an input nobody writes, two writers, a cycle)."""


@lru_cache(maxsize=1)
def stage_modules() -> dict[str, ModuleType]:
    """Stage name -> module, for every module of the ``stages`` package that declares ``STAGE``."""
    try:
        return {name: module for name, (module, _) in declarations(STAGES_PACKAGE, "STAGE", Stage).items()}
    except ValueError as e:
        raise DagError(str(e)) from e


def stage(name: str) -> Stage:
    modules = stage_modules()
    if name not in modules:
        raise KeyError(f"unknown stage '{name}' (stages: {', '.join(modules)})")
    return modules[name].STAGE


def section_models() -> dict[str, type[Section]]:
    """Every params section's model: the shared ones, and each stage's own."""
    models: dict[str, type[Section]] = dict(CORE_SECTIONS)
    for module in stage_modules().values():
        s = module.STAGE
        if s.config is not None:
            if s.name in models:
                raise DagError(f"stage '{s.name}' declares a config for section '{s.name}', which is already declared")
            models[s.name] = s.config
    for module in stage_modules().values():
        missing = [p for p in module.STAGE.params if p != "seed" and p not in models]
        if missing:
            raise DagError(f"stage '{module.STAGE.name}' reads params section '{missing[0]}', which no model declares")
    return models


def load_config(root: Path | str = ".", params: str | Path = "params.yaml", overrides: list[str] | dict | None = None,
                ) -> Config:
    """params.yaml (plus ``-S`` overrides) validated against every section model."""
    path = Path(params) if Path(params).is_absolute() else Path(root) / params
    parsed = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    config = Config.validate(Params.load(path, parsed), section_models())
    owned.claim_project(root, config.runtime.cache_dir)  # what this project's runs may delete and replace
    return config


def validate(params: Params) -> Config:
    return Config.validate(params, section_models())


@dataclass(frozen=True)
class Node:
    """One stage run: ``index`` for system ``bm25`` is the node ``index-bm25``."""

    stage: Stage
    variant: str | None
    module: ModuleType = field(repr=False)
    outputs: tuple[BoundOutput, ...]
    inputs: tuple[BoundOutput, ...] = ()
    raw: tuple[str, ...] = ()  # templates such as ${corpus.path}
    after: tuple[str, ...] = ()  # keys of the nodes whose outputs this one reads

    @property
    def key(self) -> str:
        return f"{self.stage.name}-{self.variant}" if self.variant else self.stage.name

    @property
    def command(self) -> list[str]:
        return ["irforge", "run", self.stage.name, *([self.variant] if self.variant else [])]

    @property
    def code(self) -> list[str]:
        return code_paths(self.module.__file__)

    def output(self, name: str) -> BoundOutput:
        for out in self.outputs:
            if out.name == name:
                return out
        known = ", ".join(o.name for o in self.outputs)
        raise KeyError(f"stage '{self.key}' declares no output '{name}' (outputs: {known})")


def _unbound_nodes(config: Config) -> list[Node]:
    out = []
    for module in stage_modules().values():
        s: Stage = module.STAGE
        variants = list(s.variants(config)) if s.variants else [None]
        for variant in variants:
            out.append(Node(s, variant, module, tuple(s.bound_outputs(variant)), raw=tuple(s.raw_inputs(config))))
    return out


def nodes(config: Config) -> list[Node]:
    """Every stage run, inputs bound to their producers, in a topological (data-flow) order."""
    unbound = _unbound_nodes(config)
    producer: dict[str, tuple[Node, BoundOutput]] = {}
    paths: dict[str, str] = {}
    for node in unbound:
        for out in node.outputs:
            if out.name in producer:
                raise DagError(f"artifact '{out.name}' is written by both '{producer[out.name][0].key}' and '{node.key}'")
            if out.path in paths:
                raise DagError(f"{out.path} is written by both '{paths[out.path]}' and '{node.key}'")
            producer[out.name], paths[out.path] = (node, out), node.key
    bound: dict[str, Node] = {}
    for node in unbound:
        inputs, after = [], []
        by_path = {out.path: name for name, (_, out) in producer.items()}
        for name in node.stage.input_names(config, node.variant):
            name = by_path.get(name.rstrip("/"), name)  # an input may name an artifact by its path
            if name not in producer:
                raise DagError(f"stage '{node.key}' reads artifact '{name}', which no stage writes "
                               f"(artifacts: {', '.join(sorted(producer))})")
            source, out = producer[name]
            inputs.append(out)
            after.append(source.key)
        bound[node.key] = Node(node.stage, node.variant, node.module, node.outputs, tuple(inputs), node.raw,
                               tuple(dict.fromkeys(after)))
    return _topological(list(bound.values()))


def _topological(items: list[Node]) -> list[Node]:
    """Kahn's algorithm; among ready nodes the shallowest first, then declaration order (readable dvc.yaml)."""
    by_key = {n.key: n for n in items}
    depth: dict[str, int] = {}

    def depth_of(key: str, trail: tuple[str, ...] = ()) -> int:
        if key in trail:
            raise DagError(f"the stages form a cycle: {' -> '.join([*trail, key])}")
        if key not in depth:
            depth[key] = 1 + max((depth_of(a, (*trail, key)) for a in by_key[key].after), default=-1)
        return depth[key]

    position = {n.key: i for i, n in enumerate(items)}
    return sorted(items, key=lambda n: (depth_of(n.key), position[n.key]))


def node(config: Config, stage_name: str, variant: str | None = None) -> Node:
    for n in nodes(config):
        if n.stage.name == stage_name and n.variant == variant:
            return n
    s = stage(stage_name)
    if s.variants is None and variant is not None:
        raise KeyError(f"stage '{stage_name}' has no variants; run it without '{variant}'")
    if s.variants is not None:
        known = list(s.variants(config))
        if variant is None:
            raise KeyError(f"stage '{stage_name}' runs once per variant; name one: {', '.join(known)}")
        raise KeyError(f"stage '{stage_name}': unknown variant '{variant}' (known: {', '.join(known)})")
    raise KeyError(f"unknown stage '{stage_name}'")


def downstream(config: Config, keys: set[str]) -> list[Node]:
    """The nodes in ``keys`` and every node that (transitively) reads their outputs, in DAG order."""
    dirty: set[str] = set()
    out = []
    for n in nodes(config):
        if n.key in keys or dirty & set(n.after):
            dirty.add(n.key)
            out.append(n)
    return out


def reading(config: Config, sections: set[str]) -> set[str]:
    """Keys of the nodes whose stage reads any of ``sections``."""
    return {n.key for n in nodes(config) if set(n.stage.params) & sections}


def resolve_template(template: str, config: Config) -> str:
    """A raw input template (``${corpus.path}``) with its params value filled in, as DVC would."""
    import re

    def value(match: re.Match) -> str:
        section, *keys = match.group(1).split(".")
        node: Any = config.as_params(section)
        for key in keys:
            node = node[key]
        return str(node)

    return re.sub(r"\$\{([\w.-]+)\}", value, template)


def describe(config: Config) -> list[dict[str, Any]]:
    """One row per node (for `irforge stages`)."""
    return [{"key": n.key, "version": n.stage.version, "params": list(n.stage.params),
             "inputs": [i.name for i in n.inputs], "outputs": [o.path for o in n.outputs]} for n in nodes(config)]
