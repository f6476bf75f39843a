"""How a stage declares itself: the one declaration everything else (DVC, the Prefect flow, provenance,
the params checks) is derived from.

A stage module holds ``STAGE = Stage(...)`` and ``run(ctx) -> dict``::

    STAGE = Stage(
        name="mine", version="2",
        params=("seed", "bm25", "encoder", "mine"),       # sections read (DVC tracks exactly these)
        config=MineConfig,                                 # the model of its own section (params.yaml "mine")
        inputs=("chunks", "index/bm25", "filtered_queries"),
        outputs=(Output("triples", "triples.parquet", kind="triples"), Metrics()),
    )

Artifacts are named, not located: an input is the name of another stage's output, and the run order is
derived from outputs -> inputs (Kedro-style). Paths live under ``artifacts/<stage>/``. An input may also be
a function of the config (and the variant) when what a stage reads depends on params (``filter.sources``).
A stage with ``variants`` runs once per variant (``index``: once per system of ``index.systems``);
``{variant}`` in an output's name and path is the variant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

ARTIFACTS = "artifacts"

# A stage's inputs: artifact names, or functions (config, variant) -> artifact names.
InputSpec = str | Callable[[Any, str | None], Iterable[str]]
# Raw inputs outside artifacts/ (the corpus): DVC-style templates ("${corpus.path}") or such functions.
RawSpec = str | Callable[[Any], Iterable[str]]

FILE_KINDS = ("folder", "json", "csv", "html")  # outputs that are not Parquet tables of a schema kind


@dataclass(frozen=True)
class Output:
    """One artifact a stage writes. ``kind`` is a schema kind (Parquet, checked on write and read) or one
    of :data:`FILE_KINDS`. ``cache=False`` keeps it in git instead of DVC's cache (metrics, plot data)."""

    name: str  # unique across stages; may hold {variant}
    path: str  # relative to artifacts/<stage>/; may hold {variant}
    kind: str
    cache: bool = True
    metric: bool = False  # a DVC metrics file
    description: str = ""
    registry: dict[str, Any] | None = None  # DVC `artifacts:` entry (model registry): type, desc, labels

    def bind(self, stage: str, variant: str | None) -> BoundOutput:
        def fill(text: str) -> str:
            return text.replace("{variant}", variant) if variant is not None else text

        path = "/".join(p for p in (ARTIFACTS, stage, fill(self.path)) if p)
        command = " ".join(["irforge run", stage, *([variant] if variant else [])])
        return BoundOutput(fill(self.name), path, self.kind, self.cache,
                           self.metric, self.description, self.registry, command)


@dataclass(frozen=True)
class BoundOutput:
    """An output of one stage run: its artifact name and project-relative path resolved."""

    name: str
    path: str
    kind: str
    cache: bool
    metric: bool
    description: str
    registry: dict[str, Any] | None
    command: str = ""  # the command that writes it


def Metrics(path: str = "metrics.json", name: str | None = None) -> Output:
    """The stage's DVC metrics file (``artifacts/<stage>/metrics.json``), kept in git."""
    return Output(name or "{stage}.metrics", path, "json", cache=False, metric=True)


@dataclass(frozen=True)
class Stage:
    name: str
    version: str
    params: tuple[str, ...]  # params sections read; dvc.yaml tracks exactly these
    config: type | None = None  # the model of the section named like the stage, when it has one
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[Output, ...] = ()
    raw: tuple[RawSpec, ...] = ()  # inputs outside artifacts/ (the corpus)
    variants: Callable[[Any], Iterable[str]] | None = None
    # DVC top-level `plots:` entries this stage's outputs feed (or a function of the variant giving them)
    plots: tuple[dict[str, Any], ...] | Callable[[str | None], list[dict[str, Any]]] = ()

    def bound_outputs(self, variant: str | None) -> list[BoundOutput]:
        outs = []
        for out in self.outputs:
            if "{stage}" in out.name:
                out = Output(out.name.replace("{stage}", self.name), out.path, out.kind, out.cache, out.metric,
                             out.description, out.registry)
            outs.append(out.bind(self.name, variant))
        return outs

    def input_names(self, config: Any, variant: str | None) -> list[str]:
        names: list[str] = []
        for spec in self.inputs:
            names += [spec] if isinstance(spec, str) else list(spec(config, variant))
        return list(dict.fromkeys(n.replace("{variant}", variant or "") for n in names))

    def raw_inputs(self, config: Any) -> list[str]:
        templates: list[str] = []
        for spec in self.raw:
            templates += [spec] if isinstance(spec, str) else list(spec(config))
        return list(dict.fromkeys(templates))
