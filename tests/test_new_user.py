"""What a new user meets on day one: messages that name the next right command, a readable metrics table, and
every knob in params.yaml (tests/test_params.py)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import paths
from conftest import Project
from irforge.cli import app, describe_error


def test_search_before_publish_points_at_publish(evaluated_copy: Project) -> None:
    root = evaluated_copy.root
    result = CliRunner().invoke(app, ["search", "quasars", "--root", str(root), "--params", str(root / "params.yaml"),
                                      "--no-service"])
    assert result.exit_code != 0
    message = describe_error(result.exception)
    assert "nothing is served as 'main' yet" in message and "run `irforge publish`" in message


def test_a_missing_artifact_says_how_to_build_it(evaluated_copy: Project) -> None:
    from irforge.contract import ArtifactError, read_artifact

    (evaluated_copy.root / paths.CHUNKS).unlink()
    with pytest.raises(ArtifactError, match="`dvc repro` runs every stage in order"):
        read_artifact(evaluated_copy.root / paths.CHUNKS, "chunks")


def test_metrics_prints_one_row_per_system_best_on_test_first(evaluated_copy: Project) -> None:
    root = evaluated_copy.root
    metrics = json.loads((root / paths.METRICS).read_text())
    result = CliRunner().invoke(app, ["metrics", "--root", str(root), "--params", str(root / "params.yaml")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["system", "nDCG@10", "dev", "test"]
    assert set(lines[1]) == {"-", " "}
    [bm25] = [line for line in lines[2:] if line.startswith("bm25 ")]
    assert f"{metrics['bm25']['nDCG@10']:.4f}" in bm25 and f"{metrics['bm25']['test']['nDCG@10']:.4f}" in bm25
    assert max(len(line) for line in lines) < 100  # `dvc metrics show` was ~150 columns for the default run
    md = CliRunner().invoke(app, ["metrics", "--md", "--root", str(root), "--params", str(root / "params.yaml")])
    assert md.output.splitlines()[1].startswith("|---|") and "| bm25 |" in md.output


def test_metrics_before_a_run_says_what_to_run(tmp_path) -> None:
    from conftest import make_project

    project = make_project(tmp_path / "p")
    result = CliRunner().invoke(app, ["metrics", "--root", str(project.root), "--params",
                                      str(project.root / "params.yaml")])
    assert result.exit_code != 0 and "run `make repro`" in describe_error(result.exception)


def test_metrics_without_judgments_says_where_to_look(tmp_path) -> None:
    from conftest import make_project

    project = make_project(tmp_path / "p", judged=False)
    (project.root / paths.METRICS).parent.mkdir(parents=True)
    (project.root / paths.METRICS).write_text("{}")
    result = CliRunner().invoke(app, ["metrics", "--root", str(project.root), "--params",
                                      str(project.root / "params.yaml")])
    assert result.exit_code == 0 and "no judged queries" in result.output and "irforge judge serve" in result.output
    assert "serves the default" in result.output and "not a ranking" in result.output
