"""`cmva run --profile smoke`: every stage for real on tiny sizes; resumable; evaluation from real generations."""

from __future__ import annotations

import csv
import json

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from cmva.cli import app
from cmva.config import load_profile
from cmva.data import SAMPLE_MIC
from cmva.evaluate import rouge_table
from cmva.pipeline import run_pipeline
from cmva.storage import LocalStore, sha256_file
from cmva.text_metrics import looping_share

VALUES = ["care", "fairness", "loyalty", "authority", "sanctity"]


def test_every_stage_published_with_manifest(smoke_run):
    out, result, _ = smoke_run
    store = LocalStore(out)
    for name in ["base", "rewards", *(f"agents/{v}" for v in VALUES), "aggregator-data", "aggregator", "eval"]:
        assert store.exists(name), name
        store.get(name)  # verifies every sha256
    assert set(result["timings"]) >= {"base", "rewards", "aggregator", "eval"}
    assert not list(out.glob(".work-*")) and not list(out.glob(".tmp-*"))  # no half-written leftovers


def test_lora_weights_changed_and_base_untouched(smoke_run):
    out, _, _ = smoke_run
    base_manifest = json.loads((out / "base" / "_manifest.json").read_text())
    for rel, meta in base_manifest["files"].items():
        assert sha256_file(out / "base" / rel) == meta["sha256"]  # training never wrote into the base
    for adapter in [*(f"agents/{v}" for v in VALUES), "aggregator"]:
        tensors = load_file(out / adapter / "adapter_model.safetensors")
        assert tensors and all("lora_" in k for k in tensors), adapter  # only LoRA weights are saved
        lora_b = [t for k, t in tensors.items() if "lora_B" in k]
        # peft initialises lora_B to zero: any non-zero value was learned.
        assert any(t.abs().max() > 0 for t in lora_b), f"{adapter}: LoRA weights did not change"
    log = json.loads((out / "agents" / "care" / "training_log.json").read_text())
    assert log and all(h["reward"] is not None and h["kl"] is not None for h in log)
    assert (out / "agents" / "care" / "reward_kl.png").stat().st_size > 1000
    card = (out / "agents" / "care" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft") and "| repetition reward weight" in card
    assert "| 1.0 |" in card.split("| repetition reward weight")[1].splitlines()[0]  # smoke.yaml's care
    summary = json.loads((out / "agents" / "care" / "summary.json").read_text())
    assert [h["step"] for h in summary["dev_history"]] == [1, 2]  # the smoke recipe judges every step on dev
    assert summary["selected_step"] in (1, 2)
    assert summary["seed"] == 0  # the smoke profile's: no per-value seed
    assert summary["repetition_weight"] == 1.0 and all(0 <= h["repeated_ngrams"] <= 1 for h in log)  # smoke.yaml
    fairness = json.loads((out / "agents" / "fairness" / "training_log.json").read_text())
    assert fairness and not any("repeated_ngrams" in h for h in fairness)  # trained on the value's reward alone


def test_aggregator_data_has_several_profiles_per_question(smoke_run):
    out, _, _ = smoke_run
    rows = [json.loads(line) for line in open(out / "aggregator-data" / "aggregator_data.jsonl")]
    stats = json.loads((out / "aggregator-data" / "stats.json").read_text())
    assert len(rows) == stats["rows"] == 4 * (1 + 1 + 3)  # smoke: 4 questions × (MIC's own, one-hot, 3 graded)
    for r in rows:
        positive = {v for v, w in r["profile"].items() if w > 0}
        assert set(r["answers"]) <= positive and len(positive - set(r["answers"])) <= 1  # at most one random drop
        if len(r["answers"]) < len(VALUES):
            assert "(skipped:" in r["prompt"][0]["content"]
        target = r["completion"][0]["content"]
        assert target and (target in r["answers"].values() or r["target_source"] == "mic")
    assert stats["rows_showing_all_agents"] > 0


def test_evaluation_numbers_come_from_generations(smoke_run):
    out, result, _ = smoke_run
    report = json.loads((out / "eval" / "report.json").read_text())
    gens = [json.loads(line) for line in open(out / "eval" / "generations.jsonl")]
    systems = {g["system"] for g in gens}
    assert {"cmva-gs", "pt", "few-shot", "prompt-aggregation", "weighted-merge"} <= systems
    assert {f"agent:{v}" for v in VALUES} <= systems
    targets = {r["rot_id"]: r for r in csv.DictReader(open(SAMPLE_MIC))}

    def target(row):
        return row["worker_answer"] or (row["A"] if row["A_agrees"] == "2" else "")

    main = [g for g in gens if g["system"] == "cmva-gs" and "probe" not in g and target(targets[g["row_id"]])]
    recomputed = rouge_table({"cmva-gs": [g["text"] for g in main]}, [target(targets[g["row_id"]]) for g in main])
    assert recomputed["cmva-gs"] == pytest.approx(report["rouge"]["cmva-gs"])
    assert set(report["conformity"]) == set(VALUES)
    for png in ("rouge.png", "conformity.png"):
        assert (out / "eval" / png).stat().st_size > 1000
    assert "ROUGE" in (out / "eval" / "report.md").read_text()
    for system in ("cmva-gs", "few-shot", "agent:care"):  # answers that repeat one of their own word 4-grams
        texts = [g["text"] for g in gens if g["system"] == system and "probe" not in g]
        assert report["looping"][system] == pytest.approx(looping_share(texts))
    assert f"| agent:care | {report['looping']['agent:care']:.0%} |" in (out / "eval" / "report.md").read_text()


def test_smoke_evaluation_takes_the_cpu_profiles_paths(smoke_run):
    """Graded all-positive profiles reach the weighted merge after a fused mixed-adapter batch
    (the path that crashed `make run` at 9374e7c while the smoke run stayed green)."""
    out, _, _ = smoke_run
    report = json.loads((out / "eval" / "report.json").read_text())
    gens = [json.loads(line) for line in open(out / "eval" / "generations.jsonl")]
    assert report["engine_batches"].get("fused-mixed", 0) >= 1  # the agents' pass mixed adapters
    assert report["engine_batches"].get("peft-mixed", 0) >= 1  # a batch of merges over the fused rank cap
    merges = [g for g in gens if g["system"] == "weighted-merge" and g.get("probe") == "sensitivity"]
    assert merges and all(sum(w > 0 for w in g["profile"].values()) >= 2 for g in merges)
    assert report["merges"]["profiles_with_2plus_agents"] >= len({json.dumps(g["profile"]) for g in merges})
    graded = [g for g in merges if set(g["profile"].values()) - {0.0, 1.0}]
    assert graded, "no graded (non-binary) profile in the smoke evaluation"
    selector = "target-rule selector"  # the aggregator's target rule on the agents' answers
    assert set(report["sensitivity"]) == {"cmva-gs", "prompt-aggregation", "weighted-merge", selector}
    agent_texts = {g["text"] for g in gens if g["system"].startswith("agent:")}
    picked = [g for g in gens if g["system"] == selector]
    assert len(picked) == 2 * 2 + 2 * 5 and {g["text"] for g in picked} <= agent_texts
    assert report["sensitivity"][selector]["answers"] == 2 * 2
    # CMVA-GS answers every graded probe; the baselines the first `baseline_probes` (the cpu profile's split)
    assert report["sensitivity"]["cmva-gs"]["answers"] == 2 * 2 > len(merges) == 2
    assert all(report["sensitivity"][s]["answers"] == len(merges) for s in ("prompt-aggregation", "weighted-merge"))
    assert "second_judge" in report and set(report["second_judge"]["paired"]) == set(report["paired"])
    # Paired one-hot test: every system, 2 questions × 5 values × 4 other values each.
    assert set(report["paired"]) == {"cmva-gs", "prompt-aggregation", "weighted-merge", selector}
    assert all(d["comparisons"] == 2 * 5 * 4 for d in report["paired"].values())
    paired = [g for g in gens if g.get("probe") == "paired"]
    assert len(paired) == 4 * 2 * 5 and all(sorted(g["profile"].values()) == [0, 0, 0, 0, 1] for g in paired)
    same = [  # CMVA-GS answers that open like the selector's, recounted from the generations
        a["text"].split()[:12] == b["text"].split()[:12]
        for a, b in zip(
            [g for g in paired if g["system"] == "cmva-gs"], [g for g in paired if g["system"] == selector], strict=True
        )
    ]
    assert report["selector_agreement"]["paired"] == pytest.approx(sum(same) / len(same))
    assert 0 <= report["selector_agreement"]["graded"] <= 1
    for png in ("profile_following.png", "specialisation.png"):
        assert (out / "eval" / png).stat().st_size > 1000
    assert set(report["specialisation"]["matrix"]) == set(VALUES)
    assert all(set(c) >= {"delta_ci95", "gap_closed"} for c in report["conformity"].values())
    assert set(report["rouge_ci95"]["cmva-gs"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    rouge, delta = report["rouge"], report["rougeL_delta"]
    assert set(delta) == set(rouge) - {"cmva-gs"}
    for s, d in delta.items():  # a paired difference over the same rows: the difference of the two means
        assert d["delta"] == pytest.approx(rouge["cmva-gs"]["rougeL"] - rouge[s]["rougeL"])
        assert d["ci95"][0] <= d["delta"] <= d["ci95"][1]


def test_rerun_reuses_finished_stages(smoke_run):
    out, result, wall = smoke_run
    print(f"smoke pipeline wall time: {wall:.0f} s (budget 3 min; measured, not asserted: see bench/)")
    again = run_pipeline(load_profile("smoke"), out)
    assert set(again["timings"]) == set(result["timings"])
    assert all(t == 0.0 for t in again["timings"].values())  # every stage reused, none recomputed


def test_evaluate_any_mic_schema_csv(smoke_run, tmp_path):
    out, _, _ = smoke_run
    # An unseen test file: no split column, extra columns, a foundation outside the run's values.
    path = tmp_path / "external.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["Q", "A", "rot", "moral", "A_agrees", "extra"])
        w.writeheader()
        w.writerow(
            {
                "Q": "Should I return extra change?",
                "A": "Yes, give it back; it is only fair.",
                "rot": "It is good to be honest.",
                "moral": "fairness",
                "A_agrees": 2,
                "extra": "x",
            }
        )
        w.writerow(
            {
                "Q": "Can I read my teen's diary?",
                "A": "No, respect her privacy.",
                "rot": "It is wrong to snoop.",
                "moral": "liberty|care",
                "A_agrees": 2,
                "extra": "y",
            }
        )
    res = CliRunner().invoke(
        app, ["evaluate", "--artifacts", str(out), "--data", str(path), "--out", str(tmp_path / "ev")]
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["rows"] == 2 and report["rows_with_target"] == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("Q,A,rot,moral\nq,a,r,care\n")
    res = CliRunner().invoke(
        app, ["evaluate", "--artifacts", str(out), "--data", str(bad), "--out", str(tmp_path / "ev2")]
    )
    assert res.exit_code == 2 and "A_agrees" in res.output


def test_base_carries_the_recipes_decoding_rule_and_answers_follow_it(smoke_run, tmp_path):
    from bench.decode_rule import main as decode_rule
    from cmva.decoding import load_decoding

    out, _, _ = smoke_run
    assert load_decoding(out / "base").no_repeat_ngram_size == 3  # smoke.yaml's base.no_repeat_ngram_size
    assert load_decoding(out / "base").cpu_dtype == "float16-weights"  # smoke.yaml's base.cpu_dtype
    assert json.loads((out / "eval" / "report.json").read_text())["generation_dtype"] == "float16-weights"
    args = ["--artifacts", str(out), "--report", str(out / "eval"), "--out", str(tmp_path)]
    same = decode_rule([*args, "--ngram", "3"])  # the base's own rule: the evaluation's answers again
    assert same["rule"]["rougeL"] == same["evaluation"]["rougeL"]
    assert same["rule"]["conformity"] == same["evaluation"]["conformity"]
    assert not any(same["changed"].values())
    free = decode_rule([*args, "--ngram", "0"])  # no rule: the tiny random model's answers change
    assert max(free["changed"].values()) > 0.5
    assert "| agent:care |" in (tmp_path / "decode_rule_answer.md").read_text()
