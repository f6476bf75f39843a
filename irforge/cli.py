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
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
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
) -> None:
    """Run the whole experiment as a Prefect flow (the same stage functions `dvc repro` runs)."""
    from pipelines.experiment import experiment

    experiment(params_path=str(params), root=str(root), overrides=list(set_ or []))


@app.command()
def audit(
    path: Annotated[Path, typer.Argument(help="an artifact: Parquet file, index/model folder, or run file")],
    root: RootOpt = Path("."),
) -> None:
    """Print an artifact's provenance and walk its inputs back to the raw corpus."""
    from irforge.audit import lineage, render_text

    try:
        typer.echo(render_text(lineage(path, root)))
    except (ValueError, FileNotFoundError) as e:
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
