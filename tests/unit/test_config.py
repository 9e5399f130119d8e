"""Recipes shipped in the package parse, and bad settings fail with a message saying what to change."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest
from pydantic import ValidationError

from cmva.agents import rloo_config
from cmva.config import PROFILES, AgentCfg, SchedulerName, StorageSettings, load_profile


@pytest.mark.parametrize("name", PROFILES)
def test_recipes_parse_and_build_trl_configs(name, tmp_path):
    p = load_profile(name)
    assert p.name == name
    cfg = rloo_config(p.agent, tmp_path)
    assert cfg.beta > 0 and cfg.num_generations == p.agent.num_generations


def test_overrides_and_typos():
    assert load_profile("smoke", {"agent.max_steps": 7}).agent.max_steps == 7
    with pytest.raises(ValidationError, match="max_stepz"):
        load_profile("smoke", {"agent.max_stepz": 7})
    with pytest.raises(ValueError, match="unknown profile"):
        load_profile("huge")


def test_set_items_parse_as_yaml_scalars():
    from cmva.config import parse_sets

    assert parse_sets(["agent.beta=0.2", "seed=1", "agent.reward=contrast"]) == {
        "agent.beta": 0.2,
        "seed": 1,
        "agent.reward": "contrast",
    }
    with pytest.raises(ValueError, match="key=value, got 'seed'"):
        parse_sets(["seed"])


def test_agent_selection_settings_are_checked():
    assert load_profile("cpu").agent.select_every == 0  # off in the cpu recipe (cmva/recipes/cpu.yaml)
    with pytest.raises(ValidationError, match="select_every"):
        load_profile("smoke", {"agent.select_every": -1})


def test_agent_config_validation(tmp_path):
    with pytest.raises(ValueError, match="multiple of agent.num_generations"):
        rloo_config(AgentCfg(per_device_train_batch_size=6, num_generations=4), tmp_path)
    with pytest.raises(ValueError, match="beta must be > 0"):
        rloo_config(AgentCfg(beta=0.0), tmp_path)
    with pytest.raises(ValueError, match="set agent.learning_rate itself"):
        rloo_config(AgentCfg(extra={"learning_rate": 1e-3}), tmp_path)


def test_agent_learning_rate_schedule_reaches_trl(tmp_path):
    from transformers import SchedulerType

    assert rloo_config(AgentCfg(), tmp_path).lr_scheduler_type == "linear"  # TRL's default, decays to 0
    assert rloo_config(load_profile("cpu").agent, tmp_path).lr_scheduler_type == "constant"  # cpu.yaml
    with pytest.raises(ValidationError, match="lr_scheduler_type"):  # when the recipe loads, before any training
        AgentCfg(lr_scheduler_type="warp")
    # the names the recipe accepts are transformers' own: a transformers that adds or drops one fails here
    assert set(get_args(SchedulerName)) == {t.value for t in SchedulerType}


def test_repetition_weight_becomes_trls_second_reward_weight(tmp_path):
    assert rloo_config(AgentCfg(), tmp_path).reward_weights is None  # one reward function, TRL's default weight
    assert rloo_config(AgentCfg(repetition_weight=0.5), tmp_path).reward_weights == [1.0, 0.5]
    with pytest.raises(ValidationError, match="repetition_weight"):
        AgentCfg(repetition_weight=-1)


def test_per_value_agent_settings_override_the_shared_ones():
    p = load_profile("smoke", {"seed": 7, "agent.per_value": {"fairness": {"seed": 2, "learning_rate": 1e-3}}})
    fairness, care = p.agent_for("fairness"), p.agent_for("care")
    assert (fairness.seed, fairness.learning_rate) == (2, 1e-3)
    assert (care.seed, care.learning_rate) == (7, p.agent.learning_rate)  # the profile's seed, the shared rate
    assert fairness.max_steps == care.max_steps == p.agent.max_steps


@pytest.mark.parametrize(
    ("per_value", "message"),
    [
        ({"fairnes": {"seed": 2}}, r"agent.per_value: \['fairnes'\] are not values of this profile"),
        ({"fairness": {"sed": 2}}, r"agent.per_value.fairness: sed: Extra inputs are not permitted"),
        ({"fairness": {"seed": "two"}}, r"agent.per_value.fairness: seed: Input should be a valid integer"),
        ({"fairness": {"per_value": {}}}, r"agent.per_value.fairness.per_value: per-value settings do not nest"),
        ({"fairness": {"lora": {"rank": 8}}}, r"agent.per_value.fairness: lora.rank: Extra inputs"),
    ],
)
def test_per_value_agent_settings_are_checked_when_the_recipe_loads(per_value, message):
    with pytest.raises(ValidationError, match=message):
        load_profile("smoke", {"agent.per_value": per_value})


def test_the_agent_stage_trains_with_its_values_settings(monkeypatch, tmp_path):
    from cmva import distributed, stages
    from cmva.values import resolve_values

    calls = []
    monkeypatch.setattr(stages, "mic_questions", lambda mic, values, split="train": [f"{split} question"])
    monkeypatch.setattr(distributed, "call", lambda nproc, fn, *args: calls.append(args))
    profile = load_profile("smoke", {"agent.per_value": {"care": {"seed": 3, "select_every": 0}}})
    for value in ("care", "fairness"):
        call = stages.StageCall(
            profile, resolve_values(profile.values), {"mic": tmp_path}, {"base": "b", "rewards": "r"}
        )
        stages.BY_NAME["train-agent"].run(tmp_path, dataclasses.replace(call, value=value))
    (*_, care_cfg, _, care_dev), (*_, fair_cfg, _, fair_dev) = calls
    assert profile.agent.select_every > 0  # the smoke recipe judges dev checkpoints; care's agent is told not to
    assert (care_cfg.seed, care_cfg.select_every, care_dev) == (3, 0, None)
    assert (fair_cfg.seed, fair_cfg.select_every, fair_dev) == (0, profile.agent.select_every, ["dev question"])


def test_storage_settings_follow_kserve_env(monkeypatch):
    monkeypatch.setenv("S3_ENDPOINT", "minio.cmva:9000")
    monkeypatch.setenv("S3_USE_HTTPS", "0")
    assert StorageSettings().host_and_tls() == ("minio.cmva:9000", False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.example.com")
    assert StorageSettings().host_and_tls() == ("s3.example.com", True)
