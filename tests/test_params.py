"""Typed params: every section is validated before any stage work, with errors that name the key, the value,
what was expected and the closest known key."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import REPO, make_project
from irforge.config import ParamsError, load_yaml, parse_overrides
from irforge.engine import load_config


def _error(**overrides) -> str:
    with pytest.raises(ParamsError) as e:
        load_config(REPO, overrides={k.replace("__", "."): v for k, v in overrides.items()})
    return str(e.value)


def test_a_typo_in_a_key_names_the_closest_key() -> None:
    assert "chunk.strid: unknown key (did you mean 'stride'?)" in _error(chunk__strid=8)
    assert "chunk.max_tokns: unknown key (did you mean 'max_tokens'?)" in _error(chunk__max_tokns=16)
    assert "filter.too_easy.margn: unknown key (did you mean 'margin'?)" in _error(filter__too_easy__margn=0.5)
    assert "leakage.jacard: unknown key (did you mean 'jaccard'?)" in _error(leakage__jacard=0.5)


def test_an_unknown_section_is_an_error() -> None:
    assert "chunck: unknown params section (did you mean 'chunk'?)" in _error(chunck__max_tokens=1)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("chunk.max_tokens", "abc", "chunk.max_tokens: 'abc' is invalid: input should be a valid integer"),
    ("chunk.max_tokens", [1], "chunk.max_tokens: [1] is invalid: input should be a valid integer"),
    ("chunk.max_tokens", True, "chunk.max_tokens: True is invalid: input should be a valid integer"),
    ("evaluate.depth", 0, "evaluate.depth: 0 is invalid: input should be greater than or equal to 1"),
    ("bm25.k1", -3, "bm25.k1: -3 is invalid: input should be greater than or equal to 0"),
    ("filter.combine", "some", "filter.combine: 'some' is invalid: input should be 'any' or 'all'"),
    ("runtime.threads", True, "runtime.threads: True is invalid: input should be a valid integer or 'auto'"),
])
def test_wrong_types_and_ranges_are_named(key: str, value, expected: str) -> None:
    with pytest.raises(ParamsError) as e:
        load_config(REPO, overrides={key: value})
    assert expected in str(e.value)


def test_rules_across_keys_are_checked() -> None:
    assert "chunk.stride must be smaller than chunk.max_tokens" in _error(chunk__stride=300)
    assert "corpus.queries is set but corpus.qrels is null" in _error(corpus__qrels=None)
    assert "evaluate.compare: 'nope' is not a system, feedback system or fusion" in _error(evaluate__compare=[["nope", "bm25"]])


def test_every_error_is_reported_at_once() -> None:
    message = _error(chunk__strid=8, bm25__k1=-1)
    assert "chunk.strid" in message and "bm25.k1" in message


def test_defaults_live_in_the_section_models() -> None:
    config = load_config(REPO, overrides={"filter": {}})  # an empty section takes every default
    assert config.section("filter").k == 20 and config.section("leakage").jaccard == 0.8


def test_yaml_numbers_are_read_as_dvc_reads_them() -> None:
    assert load_yaml("a: 1e-3\nb: 2.0e-5\nc: 1_000") == {"a": 0.001, "b": 2e-05, "c": 1000}


def test_overrides_parse_yaml_values_and_refuse_malformed_items() -> None:
    assert parse_overrides(["a.b=3", "c=[x, y]", "d=null"]) == {"a.b": 3, "c": ["x", "y"], "d": None}
    with pytest.raises(ParamsError, match="expected KEY=VALUE"):
        parse_overrides(["chunk.max_tokens"])


def test_the_cli_refuses_an_unknown_override_in_one_line(tmp_path) -> None:
    project = make_project(tmp_path / "p")
    done = subprocess.run([sys.executable, "-m", "irforge", "run", "chunk", "-S", "chunk.max_tokns=16"],
                          cwd=project.root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "chunk.max_tokns: unknown key (did you mean 'max_tokens'?)" in lines[-1]
    assert "Traceback" not in done.stderr
    assert not (project.root / "artifacts").exists()  # nothing ran


def test_the_shipped_params_file_is_valid_and_complete() -> None:
    """params.yaml is where a user finds every knob: each key of each section model (nested blocks included)
    is written there, and nothing unknown is."""
    from pydantic import BaseModel

    from irforge.engine.dag import section_models

    config = load_config(REPO)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in raw.items():
        if isinstance(values, dict):
            assert config.as_params(section).keys() >= values.keys()

    def unwritten(model: type[BaseModel], data: object, prefix: str) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if not isinstance(data, dict) or name not in data:
                missing.append(f"{prefix}.{name}")
            elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                missing += unwritten(field.annotation, data[name], f"{prefix}.{name}")
        return missing

    missing = [key for section, model in section_models().items() for key in unwritten(model, raw.get(section), section)]
    assert not missing, f"keys with no line in params.yaml: {missing}"
