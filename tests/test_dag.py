"""dvc.yaml, the Prefect flow's STEPS, the stage modules and irforge/layout.py describe one DAG.

Generic on purpose: a new stage passes once it is wired in the four places (runner.STAGES, STEPS, dvc.yaml,
params.yaml) consistently, with nothing in this file to edit. dvc.yaml is read through DVC itself, so
interpolation (``${corpus.path}``) and foreach/matrix stages resolve as `dvc repro` sees them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO
from irforge import layout
from irforge.runner import STAGES, load_stage
from pipelines.experiment import STEPS, Step


@pytest.fixture(scope="module")
def dvc_stages() -> dict:
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return {stage.name: stage for stage in repo.index.stages if hasattr(stage, "cmd")}


def _params_sections(stage) -> set[str]:
    from dvc.dependency.param import ParamsDependency

    return {key for dep in stage.deps if isinstance(dep, ParamsDependency) for key in dep.params}


def _paths(items) -> list[str]:
    from dvc.dependency.param import ParamsDependency

    return [Path(item.def_path).as_posix() for item in items if not isinstance(item, ParamsDependency)]


def _overlaps(a: str, b: str) -> bool:
    """One path is the other or lies inside it (a folder artifact and a file in it)."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _layout_paths() -> set[str]:
    known = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str) and v.startswith(layout.ARTIFACTS)}
    trained = {f(m) for m in layout.TRAINED_MODELS for f in (layout.model_dir, layout.train_log_csv)}
    return known | trained | {layout.index_dir(step.system) for step in STEPS if step.stage == "index" and step.system}


STEP_IDS = [step.key for step in STEPS]


def test_dvc_stages_are_the_flow_steps(dvc_stages: dict) -> None:
    assert sorted(dvc_stages) == sorted(STEP_IDS)
    assert len(set(STEP_IDS)) == len(STEP_IDS)


def test_steps_are_in_dependency_order() -> None:
    seen: set[str] = set()
    for step in STEPS:
        assert set(step.after) <= seen, f"{step.key} waits for a step that runs after it: {set(step.after) - seen}"
        seen.add(step.key)


@pytest.mark.parametrize("step", STEPS, ids=STEP_IDS)
def test_step_runs_a_registered_stage(step: Step) -> None:
    assert step.stage in STAGES
    module = load_stage(step.stage)
    assert module.STAGE.name == step.stage
    assert callable(module.run)


@pytest.mark.parametrize("step", STEPS, ids=STEP_IDS)
def test_dvc_command_is_irforge_run(step: Step, dvc_stages: dict) -> None:
    assert dvc_stages[step.key].cmd == " ".join(["irforge run", step.stage, *([step.system] if step.system else [])])


@pytest.mark.parametrize("step", STEPS, ids=STEP_IDS)
def test_dvc_params_are_exactly_the_sections_the_stage_declares(step: Step, dvc_stages: dict) -> None:
    declared = load_stage(step.stage).STAGE.params
    assert _params_sections(dvc_stages[step.key]) == set(declared)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(declared) <= set(params), f"params.yaml lacks {set(declared) - set(params)}"


@pytest.mark.parametrize("step", STEPS, ids=STEP_IDS)
def test_dvc_tracks_the_stage_code(step: Step, dvc_stages: dict) -> None:
    code = STAGES[step.stage].replace(".", "/") + ".py"
    assert code in _paths(dvc_stages[step.key].deps)


@pytest.mark.parametrize("step", STEPS, ids=STEP_IDS)
def test_outs_are_layout_paths_in_the_stage_folder(step: Step, dvc_stages: dict) -> None:
    outs = _paths(dvc_stages[step.key].outs)
    assert outs, f"{step.key} declares no outs"
    known = _layout_paths()
    folder = f"{layout.ARTIFACTS}/{step.stage}"
    for out in outs:
        assert out in known, f"{step.key}: out {out} is not a path from irforge/layout.py"
        assert _overlaps(out, folder), f"{step.key}: out {out} is outside {folder}/"


def test_no_two_stages_write_the_same_path(dvc_stages: dict) -> None:
    owners: dict[str, str] = {}
    for name, stage in dvc_stages.items():
        for out in _paths(stage.outs):
            clash = [owner for path, owner in owners.items() if _overlaps(path, out)]
            assert not clash, f"{out} ({name}) overlaps an out of {clash}"
            owners[out] = name


@pytest.mark.parametrize("step", STEPS, ids=STEP_IDS)
def test_flow_waits_for_exactly_the_stages_whose_outputs_it_reads(step: Step, dvc_stages: dict) -> None:
    producers = set()
    for dep in _paths(dvc_stages[step.key].deps):
        if not dep.startswith(layout.ARTIFACTS + "/"):
            continue
        owners = {name for name, stage in dvc_stages.items() for out in _paths(stage.outs) if _overlaps(out, dep)}
        assert owners, f"{step.key} depends on {dep}, which no stage produces"
        producers |= owners
    assert producers == set(step.after)
