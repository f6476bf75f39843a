"""The stage declarations are the one source of the DAG: dvc.yaml, the Prefect flow's order, the params each
stage may read and the code it depends on are all derived from them (or checked against them)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from irforge.contract import ARTIFACTS
from irforge.engine import StageContext, dvc, load_config, nodes, stage_modules
from irforge.engine import dag as dag_module


@pytest.fixture(scope="module")
def config():
    return load_config(REPO)


@pytest.fixture(scope="module")
def dvc_stages() -> dict:
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return {stage.name: stage for stage in repo.index.stages if hasattr(stage, "cmd")}


def test_the_repository_dvc_yaml_is_the_generated_one(config) -> None:
    assert dvc.staleness(REPO, config) is None, "dvc.yaml is stale: run `irforge dag --write`"


def test_dvc_reads_the_same_stages_commands_and_outs(config, dvc_stages: dict) -> None:
    from dvc.dependency.param import ParamsDependency

    ours = {n.key: n for n in nodes(config)}
    assert sorted(dvc_stages) == sorted(ours)
    for key, stage in dvc_stages.items():
        n = ours[key]
        assert stage.cmd == " ".join(n.command)
        assert {Path(o.def_path).as_posix() for o in stage.outs} == {o.path for o in n.outputs}
        tracked = {k for d in stage.deps if isinstance(d, ParamsDependency) for k in d.params}
        assert tracked == set(n.stage.params), key


def test_every_stage_module_declares_a_unique_stage_and_a_run_function() -> None:
    modules = stage_modules()
    assert {"chunk", "judgments", "doc2query", "synthesize", "filter", "mine", "train", "index", "evaluate",
            "report"} <= set(modules)
    for name, module in modules.items():
        assert module.STAGE.name == name
        assert callable(module.run)


def test_outputs_live_in_their_stage_folder_and_no_path_has_two_writers(config) -> None:
    owners: dict[str, str] = {}
    for n in nodes(config):
        for out in n.outputs:
            assert out.path.startswith(f"{ARTIFACTS}/{n.stage.name}"), (n.key, out.path)
            assert out.path not in owners, f"{out.path} written by {owners.get(out.path)} and {n.key}"
            owners[out.path] = n.key


def test_nodes_come_after_every_node_whose_outputs_they_read(config) -> None:
    seen: set[str] = set()
    producer = {out.path: n.key for n in nodes(config) for out in n.outputs}
    for n in nodes(config):
        assert set(n.after) <= seen, f"{n.key} runs before {set(n.after) - seen}"
        assert set(n.after) == {producer[i.path] for i in n.inputs}
        seen.add(n.key)


def test_params_that_shape_the_dag_change_it(config) -> None:
    """index.systems and train.models decide which nodes and edges exist; filter.sources does not (the filter
    depends on both generators, so `dvc exp run -S filter.sources=...` needs no new dvc.yaml)."""
    both = load_config(REPO, overrides=["filter.sources=[synthesize, doc2query]"])
    assert dvc.generate(both) == dvc.generate(config)
    one = load_config(REPO, overrides=["train.models=[dense]", "index.systems.splade.model=pkg:splade-tiny"])
    keys = {n.key for n in nodes(one)}
    assert "train-dense" in keys and "train-splade" not in keys
    assert "train-splade" not in {a for n in nodes(one) for a in n.after}


def test_a_corpus_without_judgments_gives_the_same_dvc_yaml(config) -> None:
    """Crash fix: `corpus.queries: null` made DVC fail on a null dependency; judgments inside the corpus folder
    are covered by its `${corpus.path}` dependency, so the generated stages do not change."""
    none = load_config(REPO, overrides=["corpus.queries=null", "corpus.qrels=null"])
    without, judged = dvc.generate(none)["stages"], dvc.generate(config)["stages"]
    assert {k: v for k, v in without.items() if k != "evaluate"} == {k: v for k, v in judged.items() if k != "evaluate"}
    # The one difference: without judgments, evaluate scores the filter's held-out queries (the synthetic test set).
    assert set(without["evaluate"]["deps"]) - set(judged["evaluate"]["deps"]) == {"artifacts/filter/queries.parquet"}
    outside = load_config(REPO, overrides=["corpus.queries=elsewhere/q.jsonl", "corpus.qrels=elsewhere/r.tsv"])
    deps = dvc.generate(outside)["stages"]["judgments"]["deps"]
    assert "${corpus.queries}" in deps and "${corpus.qrels}" in deps


def test_runtime_knobs_are_not_tracked(config) -> None:
    """Changing threads or batch sizes changes neither dvc.yaml nor any stage's tracked params."""
    other = load_config(REPO, overrides=["runtime.threads=1", "runtime.encode_batch_size=8",
                                         "runtime.cache_dir=/tmp/elsewhere"])
    assert dvc.generate(other) == dvc.generate(config)
    for n in nodes(config):
        assert "runtime" not in n.stage.params


def test_a_stage_may_read_only_the_sections_it_declares(config, tmp_path) -> None:
    n = next(n for n in nodes(config) if n.key == "chunk")
    ctx = StageContext(n, tmp_path, config)
    assert ctx.section("chunk").max_tokens > 0
    with pytest.raises(KeyError, match="reads params section 'filter' without declaring it"):
        ctx.section("filter")
    with pytest.raises(KeyError, match="reads artifact 'triples' without declaring it"):
        ctx.read("triples")


def test_code_dependencies_follow_the_imports(config) -> None:
    code = {n.key: n.code for n in nodes(config)}
    assert code["chunk"][0] == "stages/chunk.py"
    assert "irforge/corpus" in code["chunk"] and "irforge/generation" not in code["chunk"]
    assert "irforge/generation" in code["synthesize"]
    assert "irforge/retrieval" in code["filter"] and "irforge/training" in code["train-dense"]


NEW_STAGE = '''
from irforge.config import Section
from irforge.contract import Metrics, Output, Stage


class CountConfig(Section):
    min_chars: int = 1


STAGE = Stage(name="count", version="1", params=("count",), config=CountConfig, inputs=("chunks",),
              outputs=(Output("chunk_counts", "counts.json", "json"), Metrics()))


def run(ctx):
    rows = ctx.read("chunks").to_pylist()
    n = sum(len(r["text"]) >= ctx.section("count").min_chars for r in rows)
    ctx.write_json("chunk_counts", {"chunks": n})
    ctx.metrics({"count": {"chunks": n}})
    return {"chunks": n}
'''


def test_a_new_stage_is_one_module(tmp_path, monkeypatch) -> None:
    """Dropping one module into the stages package adds a node, its dvc.yaml entry, its params section and
    its place in the flow's order; nothing else is edited."""
    import stages

    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "count.py").write_text(textwrap.dedent(NEW_STAGE))
    monkeypatch.setattr(stages, "__path__", [*stages.__path__, str(extra)])
    monkeypatch.setattr(dag_module, "stage_modules", dag_module.stage_modules.__wrapped__)
    try:
        config = load_config(REPO, overrides=["count.min_chars=3"])
        node = next(n for n in nodes(config) if n.key == "count")
        assert node.after == ("chunk",)
        assert config.section("count").min_chars == 3
        entry = dvc.generate(config)["stages"]["count"]
        assert entry["cmd"] == "irforge run count" and entry["params"] == ["count"]
        assert "artifacts/chunk/chunks.parquet" in entry["deps"]
        assert entry["metrics"] == [{"artifacts/count/metrics.json": {"cache": False}}]
    finally:
        sys.modules.pop("stages.count", None)


def test_dvc_yaml_rendering_keeps_user_stages(tmp_path, config) -> None:
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"mine-plot": {"cmd": "python plot.py"}}}))
    dvc.write(tmp_path, config)
    data = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    assert data["stages"]["mine-plot"] == {"cmd": "python plot.py"}
    assert dvc.staleness(tmp_path, config) is None
    data["stages"]["chunk"]["params"] = ["corpus"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(data))
    assert "stages that differ: chunk" in dvc.staleness(tmp_path, config)


def test_two_modules_declaring_one_stage_name_is_an_error(tmp_path, monkeypatch) -> None:
    import stages

    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "zz_chunk_again.py").write_text("from stages.chunk import STAGE  # noqa: F401\n")
    monkeypatch.setattr(stages, "__path__", [*stages.__path__, str(extra)])
    try:
        with pytest.raises(dag_module.DagError, match="two modules declare STAGE 'chunk': stages.chunk, stages.zz_chunk_again"):
            dag_module.stage_modules.__wrapped__()
    finally:
        sys.modules.pop("stages.zz_chunk_again", None)


def test_a_teacher_trained_in_the_pipeline_orders_the_stages_and_a_self_taught_one_is_a_cycle() -> None:
    """teach reads artifacts/train/cross when a teacher names it, so train-cross runs first and the students after;
    a cross-encoder distilled (kl) from a teacher that is itself is refused as a cycle, naming the stages."""
    teacher = 'teach.teachers={ce: {kind: cross-encoder, model: artifacts/train/cross}}'
    config = load_config(REPO, overrides=["train.models=[dense, splade, cross]", teacher])
    order = [n.key for n in nodes(config)]
    assert order.index("train-cross") < order.index("teach") < order.index("train-dense")
    assert "train-cross" in next(n for n in nodes(config) if n.key == "teach").after
    looped = load_config(REPO, overrides=["train.models=[dense, splade, cross]", teacher, "train.cross.loss=kl"])
    with pytest.raises(dag_module.DagError, match="cycle: .*teach.*train-cross|cycle: .*train-cross.*teach"):
        nodes(looped)
