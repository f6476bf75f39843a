"""Typed params: one frozen, validated model per params.yaml section, holding the only defaults.

A stage declares the model of its own section next to its code (``STAGE = Stage(..., config=FilterConfig)``);
the sections several stages share (corpus, bm25, encoder), the operations sections (reindex) and the
untracked ``runtime`` section are declared here. :meth:`Config.validate` checks every section before any
stage work starts: an unknown key, a wrong type or an out-of-range value is a :class:`ParamsError` that
names the key, the value, what was expected, and the closest known key.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from irforge.config.params import Params, ParamsError

# YAML gives lists; a pair such as a rank window is still read as a tuple.
Pair = Annotated[tuple[int, int], Field(strict=False)]


class Section(BaseModel):
    """A params section: unknown keys are errors, types are strict (``true`` is not an integer), frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def as_params(self) -> dict[str, Any]:
        """The section with every default filled in: what provenance records and hashes."""
        return self.model_dump(mode="json")


# ---------------------------------------------------------------- shared sections


class CorpusConfig(Section):
    path: str = Field("data/cranfield", min_length=1)  # BEIR folder, .jsonl, .csv, .tsv, .parquet or a folder of documents
    format: Literal["auto", "beir", "jsonl", "csv", "tsv", "parquet", "folder"] = "auto"
    id_field: str = "_id"  # jsonl: keys; csv/tsv: header columns; parquet: columns
    title_field: str = "title"
    text_field: str = "text"
    # csv/tsv: double = RFC 4180 (a field in double quotes may hold the delimiter, line breaks and doubled quotes);
    # none = no quoting, a quote is an ordinary character (TSV files such as MS MARCO's collection.tsv)
    quoting: Literal["double", "none"] = "double"
    # A folder corpus: which files are read (globs over paths relative to the folder; ** = any folders). Every
    # file left out is listed in the quarantine with the reason, and not counted as bad.
    include: list[str] = ["**/*.md", "**/*.markdown", "**/*.txt", "**/*.html", "**/*.htm", "**/*.pdf", "**/*.docx"]
    exclude: list[str] = []
    code: Literal["keep", "drop"] = "keep"  # Markdown/HTML code blocks: kept whole in one passage, or dropped
    queries: str | None = None  # judged queries (BEIR queries.jsonl); null: the corpus has no judgments
    qrels: str | None = None  # BEIR qrels TSV

    @model_validator(mode="after")
    def _both_or_neither(self) -> CorpusConfig:
        if (self.queries is None) != (self.qrels is None):
            given, missing = ("queries", "qrels") if self.qrels is None else ("qrels", "queries")
            raise ValueError(f"corpus.{given} is set but corpus.{missing} is null: set both, or both to null")
        return self


class Bm25Config(Section):
    k1: float = Field(0.9, ge=0)
    b: float = Field(0.4, ge=0, le=1)


class EncoderConfig(Section):
    """The shared dense encoder of the stages that embed (filter, mine, the leakage rule)."""

    model: str = "pkg:all-minilm-l6-v2"
    max_length: int = Field(256, gt=0)
    # float32, as the faiss indexes encode: both share the row cache, so each chunk is encoded once per model
    precision: Literal["auto", "float32", "bfloat16"] = "float32"


class LeakageConfig(Section):
    """One rule for "this generated text is an evaluation query": the filter (training queries), doc2query (the
    expansions an evaluated index holds) and `irforge audit --validate` all apply it."""

    jaccard: float | None = Field(0.8, ge=0, le=1)  # word-set Jaccard to an evaluation query at/above = leak
    cosine: float | None = Field(0.95, ge=-1, le=1)  # dense cosine (the shared encoder) at/above = leak


class ServeConfig(Section):
    """What `irforge publish` serves (serve/<name>/) and how `irforge search` / `irforge serve` answer."""

    name: str = Field("main", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # the served system's folder: serve/<name>/
    system: str = "best"  # an evaluated run (system, feedback system, rerank, fusion); best: the verdict's choice
    # (artifacts/evaluate/verdict.json: evaluate.default unless a system is better with evaluate.confidence)
    depth: int = Field(100, ge=1)  # documents per run when searching (evaluate.depth is for measuring)
    threads: int = Field(2, ge=1)  # torch / Lucene threads per search
    host: str = "127.0.0.1"  # `irforge serve` binds here (loopback: expose it through a proxy you control)
    port: int = Field(8000, ge=1, le=65535)
    max_query_chars: int = Field(1000, ge=1)  # longer queries get a 422
    max_k: int = Field(100, ge=1)  # documents per query at most
    max_batch: int = Field(64, ge=1)  # queries per POST /search at most
    watch_seconds: float = Field(2.0, gt=0)  # how often the service looks for a newly served version


class JudgeConfig(Section):
    """The judging page (`irforge judge serve`): where judgments are kept, which systems are compared, what to ask next."""

    store: str = "data/judged"  # the judgments store: judgments.jsonl (every grade, append-only) + BEIR queries/qrels
    systems: list[str] | None = None  # the candidate runs compared (null = every run evaluate compares)
    selection: Literal["active", "depth"] = "active"  # active: the judgment that most moves the verdict | depth pooling
    depth: int = Field(10, ge=1, le=10)  # selection depth: documents per system per query in depth order
    samples: int = Field(1000, ge=50)  # Monte Carlo samples of the unjudged documents' relevance
    host: str = "127.0.0.1"  # loopback; any other host needs a token for every write (IRFORGE_JUDGE_TOKEN)
    port: int = Field(8001, ge=1, le=65535)
    token_env: str = "IRFORGE_JUDGE_TOKEN"  # the environment variable holding the write token


class ReindexConfig(Section):
    cron: str = "0 3 * * *"
    keep: int = Field(3, ge=1)
    full_every: int = Field(20, ge=0)
    eval_depth: int = Field(100, gt=0)
    measures: list[str] = ["nDCG@10", "R@100"]
    gate_measure: str | None = "nDCG@10"
    max_metric_drop: float | None = Field(0.02, ge=0)


class RuntimeConfig(Section):
    """How to run, not what to compute: no stage reads this section through DVC, so changing it re-runs
    nothing and leaves provenance alone. Batch sizes here only change speed, never a result."""

    threads: int | Literal["auto"] = "auto"  # threads per stage; auto: its share of the cores (runtime.cores)
    query_threads: int = Field(1, ge=1)  # evaluate: query encoding threads (latency is per query)
    encode_batch_size: int = Field(32, gt=0)  # texts per encoder forward pass
    cache_dir: str = ".irforge-cache"  # row caches (generated queries, vectors); outside DVC's outputs
    reuse_vectors: bool = True  # read cached vectors (off: always re-encode)
    dask_address: str | None = None  # `irforge flow` on this Dask scheduler (e.g. tcp://host:8786)
    partitions: int = Field(0, ge=0)  # shards per mapped stage on Dask (0 = two per worker)
    # Stage runs a local `irforge flow` runs at once. 1: one after another, as `dvc repro` does, so the peak memory
    # is the largest stage's (parallel branches each hold their own model: two LLM generators at once doubled it).
    flow_parallel: int = Field(1, ge=1)
    # Each stage of a local flow in a fresh process that ends with it (as dvc repro): nothing one stage loaded
    # stays for the next. false: all in the flow's process (faster start, higher peak memory).
    flow_processes: bool = True

    @property
    def pinned_threads(self) -> int | None:
        """``threads`` when it is a number; None for auto (irforge.runtime.cores shares out the cores)."""
        if self.threads == "auto":
            return None
        if self.threads < 1:
            raise ParamsError(f"runtime.threads: {self.threads} is invalid: expected 'auto' or an integer >= 1")
        return self.threads


# Sections every project has, whichever stages run. ``seed`` is a top-level integer, not a mapping.
CORE_SECTIONS: dict[str, type[Section]] = {
    "corpus": CorpusConfig,
    "bm25": Bm25Config,
    "encoder": EncoderConfig,
    "leakage": LeakageConfig,
    "reindex": ReindexConfig,
    "serve": ServeConfig,
    "judge": JudgeConfig,
    "runtime": RuntimeConfig,
}
UNTRACKED = ("runtime",)  # sections DVC never tracks


class Config:
    """Every params section, validated; ``config.section("filter")`` is the section's frozen model."""

    def __init__(self, params: Params, sections: dict[str, Section], seed: int):
        self.params = params
        self._sections = sections
        self.seed = seed

    @classmethod
    def validate(cls, params: Params, models: dict[str, type[Section]]) -> Config:
        """Check every section of ``params`` against ``models`` (name -> section model); all errors at once."""
        problems: list[str] = []
        known = {"seed", *models}
        for name in params.data:
            if name not in known:
                problems.append(f"{name}: unknown params section{_did_you_mean(name, known)}")
        seed = params.data.get("seed", 13)
        if not isinstance(seed, int) or isinstance(seed, bool):
            problems.append(f"seed: {seed!r} is invalid: expected an integer")
        sections: dict[str, Section] = {}
        for name, model in models.items():
            raw = params.data.get(name)
            if raw is None:
                raw = {}
            if not isinstance(raw, dict):
                problems.append(f"{name}: {raw!r} is invalid: expected a mapping of keys")
                continue
            try:
                sections[name] = model.model_validate(raw)
            except ValidationError as e:
                problems += _describe_all(name, model, e.errors())
        if problems:
            raise ParamsError(f"{params.source}: " + ("\n  ".join(["invalid params:", *problems])
                                                     if len(problems) > 1 else problems[0]))
        return cls(params, sections, int(seed))

    def section(self, name: str) -> Any:
        if name == "seed":
            return self.seed
        if name not in self._sections:
            raise ParamsError(f"{self.params.source}: no params section '{name}'")
        return self._sections[name]

    def as_params(self, name: str) -> Any:
        return self.seed if name == "seed" else self._sections[name].as_params()

    @property
    def runtime(self) -> RuntimeConfig:
        return self._sections["runtime"]


def _did_you_mean(key: str, known: Any) -> str:
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The section model that holds the key at ``loc`` (for the list of keys it knows)."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        current = current.model_fields[part].annotation
        if hasattr(current, "__args__") and not (isinstance(current, type) and issubclass(current, BaseModel)):
            inner = [a for a in current.__args__ if isinstance(a, type) and issubclass(a, BaseModel)]
            current = inner[-1] if inner else None  # dict[str, Model] / Model | None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


_SCALAR_TAGS = {"int", "str", "float", "bool", "none", "list", "dict"}


def _is_union_tag(part: Any) -> bool:
    """pydantic names the member of a union an error came from in ``loc`` (``int``, ``literal['auto']``, a model)."""
    text = str(part)
    return text in _SCALAR_TAGS or "[" in text or (text[:1].isupper() and text.endswith("Config"))


def _describe_all(section: str, model: type[BaseModel], errors: list[dict[str, Any]]) -> list[str]:
    """One line per offending key; the errors of a union's members are joined into one expectation."""
    grouped: dict[tuple, list[dict[str, Any]]] = {}
    for err in errors:
        loc = tuple(p for p in err["loc"] if not _is_union_tag(p))
        grouped.setdefault(loc, []).append({**err, "loc": loc})
    lines = []
    for group in grouped.values():
        if len(group) == 1:
            lines.append(_describe(section, model, group[0]))
            continue
        expected = " or ".join(dict.fromkeys(e["msg"].removeprefix("Input should be ") for e in group))
        lines.append(_describe(section, model, {**group[0], "msg": f"Input should be {expected}"}))
    return lines


def _describe(section: str, model: type[BaseModel], err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    key = ".".join([section, *(str(p) for p in loc)])
    if err["type"] == "extra_forbidden":
        holder = _model_at(model, loc)
        known = list(holder.model_fields) if holder else []
        hint = _did_you_mean(loc[-1], known) or (f" (known: {', '.join(known)})" if known else "")
        return f"{key}: unknown key{hint}"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error" or "input" not in err:
        return f"{key}: {message}"
    value = err["input"]
    shown = repr(value) if not isinstance(value, dict | list) or len(repr(value)) < 60 else type(value).__name__
    return f"{key}: {shown} is invalid: {message[0].lower() + message[1:]}"
