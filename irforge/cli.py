"""The ``irforge`` command line: run a stage, run the whole flow, audit an artifact."""

from __future__ import annotations

import os
import sys
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


def _params(params: Path, overrides: list[str] | None):
    import yaml

    from irforge.params import Params

    parsed = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got '{item}'", param_hint="--set")
        parsed[key] = yaml.safe_load(value)
    return Params.load(params, parsed)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    from irforge.progress import setup_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub is contacted only for a hub id the user names
    # TOKENIZERS_PARALLELISM is left unset: "false" made the chunk stage tokenize on one core (2x slower on
    # two), and unset, tokenizers already turns parallelism off by itself in a forked child.
    setup_logging("DEBUG" if verbose else "INFO")


@app.command()
def run(
    stage: Annotated[str, typer.Argument(help="stage name (see `irforge stages`)")],
    system: Annotated[str | None, typer.Argument(help="system, for stages that build one of several")] = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Run one stage (this is what each `dvc.yaml` stage calls)."""
    from irforge.runner import run_stage

    kwargs = {"system": system} if system else {}
    try:
        run_stage(stage, root, _params(params, set_), **kwargs)
    except (ValueError, KeyError, LookupError, FileNotFoundError) as e:
        _fail(str(e).strip("'\""))


@app.command()
def report(
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Write the HTML report (artifacts/report/index.html) from whatever artifacts exist."""
    from irforge.runner import run_stage

    try:
        summary = run_stage("report", root, _params(params, set_))
    except (ValueError, KeyError, LookupError, FileNotFoundError) as e:
        _fail(str(e).strip("'\""))
    typer.echo(Path(root) / summary["report"])


@app.command()
def stages() -> None:
    """List the stages and the params sections each one reads."""
    from irforge.runner import STAGES, load_stage

    for name in STAGES:
        stage = load_stage(name).STAGE
        typer.echo(f"{name:<12} v{stage.version}  params: {', '.join(stage.params)}")


@app.command()
def flow(
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    set_: SetOpt = None,
    dask: Annotated[str | None, typer.Option("--dask", help="Dask scheduler address, e.g. tcp://host:8786 "
                                             "(default: flow.dask_address; none: run locally)")] = None,
) -> None:
    """Run the whole experiment as a Prefect flow (the same stage functions `dvc repro` runs)."""
    from pipelines.experiment import run_experiment

    run_experiment(params_path=str(params), root=str(root), overrides=list(set_ or []), dask_address=dask)


@app.command()
def audit(
    path: Annotated[Path | None, typer.Argument(help="an artifact: Parquet file, index/model folder, or run file")] = None,
    validate: Annotated[bool, typer.Option("--validate", help="check every artifact under artifacts/; exit 1 on any violation")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="also write the report as HTML to this file")] = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    query: Annotated[str | None, typer.Option("--query", help="on triples / filtered queries: one query's story "
                                              "(chunk, generator, prompt, filter ranks, negatives)")] = None,
) -> None:
    """Print an artifact's provenance and walk its inputs back to the raw corpus; `--validate` checks a whole run."""
    from irforge.audit import audit_command, query_story, render_query_story

    try:
        if query is not None:
            if path is None:
                _fail("--query needs a triples or filtered_queries artifact path")
            typer.echo(render_query_story(query_story(path, query, root)))
            return
        ok = audit_command(path, root, validate, html, _params(params, None))
    except (ValueError, KeyError, FileNotFoundError) as e:
        _fail(str(e.args[0]) if isinstance(e, KeyError) else str(e))
    if not ok:
        raise typer.Exit(1)


@app.command()
def reindex(
    system: Annotated[str | None, typer.Option(help="index to refresh (default: reindex.system)")] = None,
    full: Annotated[bool, typer.Option("--full", help="rebuild everything instead of only what changed")] = False,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    set_: SetOpt = None,
) -> None:
    """Refresh the served index from the current corpus (only changed documents) and switch to it atomically."""
    import json

    from pipelines.reindex import reindex as reindex_flow

    try:
        result = reindex_flow(params_path=str(params), root=str(root), system=system, full=full,
                              overrides=list(set_ or []))
    except (ValueError, KeyError, LookupError, FileNotFoundError, RuntimeError) as e:
        _fail(str(e).strip("'\""))
    typer.echo(json.dumps(result, indent=2, sort_keys=True))


@app.command()
def rollback(
    system: Annotated[str, typer.Option(help="served index to roll back")] = "bm25",
    to: Annotated[str | None, typer.Option(help="version to serve (default: the one served before)")] = None,
    list_: Annotated[bool, typer.Option("--list", help="only list the kept versions")] = False,
    root: RootOpt = Path("."),
) -> None:
    """Serve an earlier index version (atomic switch); `--list` shows the kept versions."""
    from irforge import serving

    try:
        if not list_:
            typer.echo(f"{system}: now serving {serving.rollback(root, system, to)}")
        current = serving.served_version(root, system)
        for version in serving.versions(root, system):
            m = serving.manifest(root, system, version)
            typer.echo(f"{'*' if version == current else ' '} {version}  {m['created_at']}  {m['mode']:<11} "
                       f"{m['chunks']} chunks  changes {m['changes']}  metrics {m.get('metrics')}"
                       + (f"  HELD: {m['held']}" if m.get("held") else ""))
    except serving.ServeError as e:
        _fail(str(e))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def pyserini(
    ctx: typer.Context,
    module: Annotated[str, typer.Argument(help="pyserini module, e.g. pyserini.search.lucene")],
) -> None:
    """Run a pyserini command line with the JDK set up (instead of `python -m pyserini...`)."""
    from irforge.java import run_pyserini_module

    run_pyserini_module(module, list(ctx.args))


def main() -> None:
    app(prog_name="irforge")


if __name__ == "__main__":
    sys.exit(main())
