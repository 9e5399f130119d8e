"""Does a decoding rule against loops cost quality? The test questions answered again under the rule, beside the
evaluation's own answers (under the base's own rule, none before cmva.decoding), on one finished run's artifacts.

    .venv/bin/python -m bench.decode_rule --artifacts RUN/serving/channels/staging \
        --report RUN/outputs/cmva-gs-<id>/evaluate/report --ngram 4 --mode answer

`--mode answer`: `cmva.decoding` (the answer's own n-grams are banned, the prompt's allowed), saved as
`decoding.json` in a view of the base; `--mode prompt`: transformers' `no_repeat_ngram_size` in the base's
`generation_config.json` (the prompt's n-grams banned too, so the aggregator cannot copy an agent's answer).
Every agent, the PT model, few-shot and CMVA-GS answer the evaluation's test rows under MIC's own profile, with the
evaluation's settings (greedy, `max_new_tokens`, few-shot examples); reported beside the evaluation's answers:
ROUGE-L on the rows with a target, the share of answers that loop (`cmva.text_metrics`), and each agent's
conformity to its value over the PT model (`cmva.reward_diagnostics.conformity`, the run's reward models).
Writes bench/results/decode_rule_<mode>.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from bench.common import write_result


def rule_view(base: Path, ngram: int, mode: str, into: Path) -> Path:
    """A directory that is `base` (symlinked file by file) with the rule in the file `mode` names, in place of
    the base's own; the base's generation dtype (`cpu_dtype`) is kept."""
    from cmva.decoding import DECODING_FILE, load_decoding, save_decoding

    view = into / "base"
    view.mkdir()
    for f in base.iterdir():  # the base's own rule, if any, is replaced (never written through a link)
        if f.name not in ("generation_config.json", "_manifest.json", DECODING_FILE):
            (view / f.name).symlink_to(f.resolve())
    gen = json.loads((base / "generation_config.json").read_text())
    own = load_decoding(base)
    if mode == "prompt":
        gen["no_repeat_ngram_size"] = ngram
    save_decoding(view, own.model_copy(update={"no_repeat_ngram_size": 0 if mode == "prompt" else ngram}))
    (view / "generation_config.json").write_text(json.dumps(gen, indent=2))
    return view


def answers(art: Path, base: Path, rows, train_rows, values, cfg: dict) -> dict[str, list[str]]:
    """Every agent's, the PT model's, few-shot's and CMVA-GS's answer per row (MIC's own profile)."""
    from cmva.aggregator import agent_answers, cmva_answers, profile_dict
    from cmva.baselines import few_shot_examples, few_shot_jobs, pt_jobs
    from cmva.engine import Engine
    from cmva.ranking import AnswerRanker

    names = [v.name for v in values]
    engine = Engine(base, {v: art / "agents" / v for v in names} | {"aggregator": art / "aggregator"})
    ranker = AnswerRanker.load(art / "aggregator", art / "rewards")
    questions, n = [r["question"] for r in rows], len(rows)
    profiles = [profile_dict(names, r["profile"]) for r in rows]
    kw = dict(max_new_tokens=cfg["max_new_tokens"], batch_size=cfg["batch_size"])
    agents = agent_answers(engine, questions, [names] * n, progress="agents", **kw)
    examples = few_shot_examples(train_rows, values, cfg["fewshot_examples"], cfg["seed"])
    jobs = pt_jobs(questions) + few_shot_jobs(questions, profiles, values, examples)
    texts = engine.generate([m for m, _ in jobs], [a for _, a in jobs], progress="baselines", **kw)
    skip = cfg.get("skip_zero_weight", True)
    cmva = cmva_answers(
        engine, questions, profiles, agents, skip_zero_weight=skip, progress="CMVA-GS", ranker=ranker, **kw
    )
    return {"pt": texts[:n], "few-shot": texts[n:], "cmva-gs": cmva} | {
        f"agent:{v}": [a[v] for a in agents] for v in names
    }


def figures(preds: dict[str, list[str]], rows, rewards, names) -> dict:
    """ROUGE-L (rows with a target), looping share, agents' conformity over the PT model."""
    from cmva.evaluate import rouge_scores
    from cmva.reward_diagnostics import conformity
    from cmva.text_metrics import looping_share

    has = [i for i, r in enumerate(rows) if r["target"]]
    per_row = rouge_scores({s: [p[i] for i in has] for s, p in preds.items()}, [rows[i]["target"] for i in has])
    scores = {s: rewards.score(p) for s, p in preds.items()}
    conf = conformity(scores["pt"], {v: scores[f"agent:{v}"][v] for v in names})
    return {
        "rougeL": {s: float(np.mean(d["rougeL"])) for s, d in per_row.items()},
        "looping": {s: looping_share(p) for s, p in preds.items()},
        "conformity": {v: {k: conf[v][k] for k in ("pt", "agent", "delta", "delta_ci95")} for v in names},
    }


def evaluated(report: Path, rows, systems) -> dict[str, list[str]]:
    """The evaluation's own answers per system, in `rows`' order (`bench.rouge_bounds.load`: probes left out)."""
    from bench.rouge_bounds import load

    by = load(report)[1]
    return {s: [by[s][r["id"]] for r in rows] for s in systems}


def markdown(result: dict) -> str:
    before, after, mode = result["evaluation"], result["rule"], result["mode"]
    lines = [
        f"## Decoding rule against loops: no_repeat_ngram_size {result['ngram']}, mode `{mode}`",
        "",
        f"Run artifacts `{result['artifacts']}`, {result['rows']} test rows ({result['rows_with_target']} with a "
        "target), greedy, the evaluation's settings. `bench/decode_rule.py`.",
        "",
        "| system or agent | answers changed | ROUGE-L evaluation | ROUGE-L rule | loops evaluation | loops rule |",
        "|---|---|---|---|---|---|",
    ]
    for s in before["rougeL"]:
        lines.append(
            f"| {s} | {result['changed'][s]:.0%} | {before['rougeL'][s]:.4f} | {after['rougeL'][s]:.4f} | {before['looping'][s]:.0%} "
            f"| {after['looping'][s]:.0%} |"
        )
    lines += ["", "| agent | conformity Δ over PT, evaluation [95 % CI] | rule [95 % CI] |", "|---|---|---|"]
    for v, c in before["conformity"].items():
        r = after["conformity"][v]
        lines.append(
            f"| {v} | {c['delta']:+.3f} [{c['delta_ci95'][0]:+.3f}, {c['delta_ci95'][1]:+.3f}] "
            f"| {r['delta']:+.3f} [{r['delta_ci95'][0]:+.3f}, {r['delta_ci95'][1]:+.3f}] |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    from cmva.data import load_mic
    from cmva.rewards import RewardModel
    from cmva.values import resolve_values

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, required=True, help="a run's serving channel or artifact directory")
    ap.add_argument("--report", type=Path, required=True, help="that run's evaluation report directory")
    ap.add_argument("--ngram", type=int, default=4)
    ap.add_argument("--mode", choices=("answer", "prompt"), default="answer")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results")
    a = ap.parse_args(argv)
    meta = json.loads((a.report / "report.json").read_text())
    values = resolve_values(list(meta["conformity"]))
    names = [v.name for v in values]
    rows = list(load_mic(meta["data"], values, split="test")[0])[: meta["config"].get("max_rows")]
    train_rows = list(load_mic(meta["data"], values, split="train")[0])
    with tempfile.TemporaryDirectory() as tmp:
        view = rule_view(a.artifacts / "base", a.ngram, a.mode, Path(tmp))
        preds = answers(a.artifacts, view, rows, train_rows, values, meta["config"])
    rewards = RewardModel.load(a.artifacts / "rewards")
    before = evaluated(a.report, rows, preds)
    result = {
        "artifacts": str(a.artifacts),
        "ngram": a.ngram,
        "mode": a.mode,
        "rows": len(rows),
        "rows_with_target": sum(bool(r["target"]) for r in rows),
        "evaluation": figures(before, rows, rewards, names),
        "rule": figures(preds, rows, rewards, names),
        "changed": {s: float(np.mean([x != y for x, y in zip(p, before[s], strict=True)])) for s, p in preds.items()},
    }
    write_result(f"decode_rule_{a.mode}", result, markdown(result), a.out)
    return result


if __name__ == "__main__":
    main()
