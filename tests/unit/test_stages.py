"""Stage declarations (cmva.stages): each stage declared once, and the CLI subcommand, the KFP component and the
in-process order derived from it."""

from __future__ import annotations

import inspect

import pytest
from typer.testing import CliRunner

from cmva import kfp_components
from cmva.cli import app
from cmva.stages import BY_OUTPUT, DISTRIBUTED, STAGES, run_view

ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


def test_every_input_is_an_earlier_stages_output():
    seen = set()
    for st in STAGES:
        assert set(st.inputs) <= seen, f"{st.name} reads {set(st.inputs) - seen} before a stage makes it"
        seen |= {st.output} | ({"agents"} if st.per_value else set())
    assert DISTRIBUTED == ("train-agent", "train-aggregator")


@pytest.mark.parametrize("st", STAGES, ids=lambda s: s.name)
def test_cli_subcommand_follows_the_declaration(st):
    out = CliRunner().invoke(app, [st.name, "--help"], env=ENV).output
    assert ("--value" in out) == st.per_value and ("--nproc" in out) == st.distributed
    assert ("--mic" in out) == ("mic" in st.data) and ("--data" in out) == ("eval" in st.data)
    assert "--artifacts" in out and "--out" in out


@pytest.mark.parametrize("st", STAGES, ids=lambda s: s.name)
def test_kfp_component_follows_the_declaration(st):
    params = inspect.signature(kfp_components.STAGE_COMPONENTS[st.name.replace("-", "_")].python_func).parameters
    assert {*st.inputs, st.output, "profile", "overrides", "values"} <= set(params)
    assert {f"{d}_uri" for d in st.data} <= set(params)
    assert ("nproc" in params) == st.distributed and ("value" in params) == st.per_value
    trainjob = kfp_components.STAGE_COMPONENTS.get(st.name.replace("-", "_") + "_trainjob")
    assert (trainjob is not None) == st.distributed
    if trainjob:
        assert {"launch", "run_id"} <= set(inspect.signature(trainjob.python_func).parameters)


def test_a_stage_without_its_inputs_names_the_command_that_makes_them(tmp_path):
    res = CliRunner().invoke(app, ["train-agent", "--artifacts", str(tmp_path), "--value", "care"], env=ENV)
    assert res.exit_code == 2 and "cmva import-base" in res.output, res.output
    res = CliRunner().invoke(app, ["evaluate", "--artifacts", str(tmp_path), "--data", "x.csv"], env=ENV)
    assert res.exit_code == 2 and "--out" in res.output
    assert BY_OUTPUT["data"].name == "build-aggregator-data"


def test_a_command_writing_elsewhere_leaves_the_run_directory_as_it_was(tmp_path):
    run, out = tmp_path / "run", tmp_path / "eval"
    run.mkdir()
    res = CliRunner().invoke(app, ["evaluate", "--artifacts", str(run), "--out", str(out)], env=ENV)
    assert res.exit_code == 2 and "cmva import-base" in res.output, res.output
    assert list(run.iterdir()) == []  # no run.json recorded for a run this command only reads


def test_a_run_recorded_by_another_version_is_named_not_a_raw_validation_error(tmp_path):
    (tmp_path / "run.json").write_text(
        '{"profile": {"name": "cpu", "no_such_section": {}}, "mic": "m", "socialchem": "s"}'
    )
    res = CliRunner().invoke(app, ["train-rewards", "--artifacts", str(tmp_path)], env=ENV)
    assert res.exit_code == 2, res.output
    assert "run.json" in res.output and "no_such_section" in res.output and "new --artifacts" in res.output


def test_run_view_is_the_run_directory_or_a_symlink_view_removed_afterwards(tmp_path):
    run = tmp_path / "run"
    dirs = {n: run / n for n in ("base", "rewards", "aggregator", "agents/care")}
    for d in dirs.values():
        d.mkdir(parents=True)
    with run_view(dirs["base"], dirs["rewards"], {"care": dirs["agents/care"]}, dirs["aggregator"]) as view:
        assert view == run  # in-process: already laid out, no view built
    kfp = {n: tmp_path / "kfp" / n.replace("/", "-") for n in dirs}  # separate KFP artifact directories
    for d in kfp.values():
        d.mkdir(parents=True)
    with run_view(kfp["base"], kfp["rewards"], {"care": kfp["agents/care"]}, kfp["aggregator"]) as view:
        assert {n: (view / n).resolve() for n in dirs} == {n: d.resolve() for n, d in kfp.items()}
    assert not view.exists() and all(d.is_dir() for d in kfp.values())  # the view went, the artifacts stay
