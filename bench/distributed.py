"""Data-parallel training here: the smoke agent (RLOO) and aggregator (SFT) stages in 1 and in 2 processes.

Both runs go through torchrun (`cmva.distributed.launch`, gloo on CPU) with the same global batch and seed; the
2-process run splits each batch over the ranks. Reported per stage: seconds per optimisation step (training wall
time / steps, rank 0's summary) at 1 and 2 processes, their ratio, and how far the 2-process LoRA weights are from
the 1-process ones (`weight_gap`). On a 2-core machine the single process uses both cores (2 torch threads) and
each of the two processes one (torchrun sets OMP_NUM_THREADS=1), so the ratio measures DDP on the same cores.

    $ .venv/bin/python -m bench.distributed [--steps 6]

Writes bench/results/distributed.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

STAGES = ("agent", "aggregator")


def reward_stub(out: Path, values: list, seed: int = 0) -> Path:
    """A reward model on the real encoder with seeded random heads: a reward to optimise, trained in no time."""
    import numpy as np

    from cmva.rewards import RewardModel, default_encoder_path, load_encoder

    encoder = load_encoder(default_encoder_path())
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 1, (len(values), encoder.get_embedding_dimension()))
    return RewardModel(encoder, values, weight, np.zeros(len(values))).save(out, default_encoder_path())


def aggregator_rows(out_dir: Path, values: list, rows: int = 20) -> Path:
    """An aggregator data directory: MIC training questions with their targets under alternating one-hot profiles."""
    from cmva.aggregator_data import DATA_FILE
    from cmva.data import SAMPLE_MIC, load_mic
    from cmva.prompts import aggregator_messages

    mic = [r for r in load_mic(SAMPLE_MIC, values, split="train")[0] if r["target"]][:rows]
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / DATA_FILE, "w") as f:
        for i, r in enumerate(mic):
            profile = {v.name: float(j == i % len(values)) for j, v in enumerate(values)}
            answers = {v.name: r["answer"] for v in values if profile[v.name]}
            prompt = aggregator_messages(r["question"], profile, answers)
            f.write(
                json.dumps({"prompt": prompt, "completion": [{"role": "assistant", "content": r["target"]}]}) + "\n"
            )
    return out_dir


def prepare(work: Path, profile, base: Path | None = None) -> dict[str, Path]:
    """Inputs of both stages: a tiny base model (or `base`), the reward stub, aggregator data."""
    from cmva.models import tiny_model
    from cmva.values import resolve_values

    values = resolve_values(profile.values)
    return {
        "base": base or tiny_model(work / "base", seed=profile.seed),
        "rewards": reward_stub(work / "rewards", values, profile.seed),
        "data": aggregator_rows(work / "aggregator-data", values),
    }


def train(stage: str, out: Path, inputs: dict[str, Path], profile, nproc: int, torchrun: bool = False) -> dict:
    """Run one stage (`agent`: care, `aggregator`) in `nproc` processes; its summary.json.

    torchrun: go through torchrun even for one process (the bench's like-for-like timing); else one process runs here.
    """
    from cmva import distributed
    from cmva.data import SAMPLE_MIC
    from cmva.stages import BY_NAME, StageCall
    from cmva.values import resolve_values

    st = BY_NAME["train-agent" if stage == "agent" else "train-aggregator"]
    ins = {k: inputs[k] for k in st.inputs}
    call = StageCall(profile, resolve_values(profile.values), {"mic": SAMPLE_MIC}, ins, "care", nproc)
    if torchrun:
        distributed.launch(nproc, st.run, out, StageCall(**{**call.__dict__, "nproc": 1}))
    else:
        st.run(out, call)
    return json.loads((out / "summary.json").read_text())


def weight_gap(ref: Path, other: Path) -> dict[str, float]:
    """How far adapter `other`'s LoRA weights are from `ref`'s.

    lora_B starts at zero, so B is the learned update: `rel_update` = ‖B_other − B_ref‖ / ‖B_ref‖ (Frobenius, all
    B tensors together). `max_abs` is max |other − ref| over every tensor (A and B), `max_ref` max |B_ref|.
    """
    from safetensors.torch import load_file

    a, b = load_file(str(ref / "adapter_model.safetensors")), load_file(str(other / "adapter_model.safetensors"))
    if a.keys() != b.keys():
        raise ValueError(f"different adapter tensors: {sorted(a.keys() ^ b.keys())[:4]}")
    bs = [k for k in a if "lora_B" in k]
    sq = lambda keys, f: sum(float(f(k).double().pow(2).sum()) for k in keys)  # noqa: E731
    ref_norm = sq(bs, lambda k: a[k]) ** 0.5
    return {
        "rel_update": sq(bs, lambda k: b[k] - a[k]) ** 0.5 / ref_norm if ref_norm else float("inf"),
        "max_abs": max(float((b[k] - a[k]).abs().max()) for k in a),
        "max_ref": max(float(a[k].abs().max()) for k in bs),
        "ref_norm": ref_norm,
        "other_norm": sq(bs, lambda k: b[k]) ** 0.5,
    }


def measure(work: Path, steps: int, reps: int) -> dict:
    """Both stages at 1 and 2 processes, alternated `reps` times: best step times, their ratio, the weight gap.

    The best of the repetitions, as other work on the machine only ever slows a run down.
    """
    from cmva.config import load_profile

    profile = load_profile("smoke", {"agent.max_steps": steps, "aggregator.max_steps": steps})
    inputs = prepare(work, profile)
    out = {}
    for stage in STAGES:
        step_s: dict[int, list[float]] = {1: [], 2: []}
        for rep in range(reps):
            for n in (1, 2):
                s = train(stage, work / f"{stage}-{n}-{rep}", inputs, profile, n, torchrun=True)
                step_s[n].append(s["wall_s"] / s["steps"])
        best = {n: min(v) for n, v in step_s.items()}
        out[stage] = {
            "steps": s["steps"],
            "global_batch": s["global_batch"],
            "step_s_runs": {n: [round(x, 3) for x in v] for n, v in step_s.items()},
            "step_s_1proc": round(best[1], 3),
            "step_s_2proc": round(best[2], 3),
            "ratio_2_over_1": round(best[2] / best[1], 3),
            "weight_gap": weight_gap(work / f"{stage}-1-0", work / f"{stage}-2-0"),
        }
    return out


def markdown(res: dict) -> str:
    lines = [
        "Smoke stages (tiny Llama, LoRA r=4) in 1 and 2 processes (torchrun, gloo), same global batch and seed;",
        f"{res['steps']} optimisation steps per run, {res['reps']} runs alternated per stage and process count; step time"
        " = training wall time / steps (rank 0), the best run's (runs: `step_s_runs` in the JSON).\n",
        "| stage | global batch | s/step 1 proc | s/step 2 procs | ratio 2/1 | LoRA update gap ‖ΔB‖/‖B‖ | max |Δw| |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage in STAGES:
        r = res[stage]
        g = r["weight_gap"]
        lines.append(
            f"| {stage} | {r['global_batch']} | {r['step_s_1proc']} | {r['step_s_2proc']} | "
            f"{r['ratio_2_over_1']} | {g['rel_update']:.2e} | {g['max_abs']:.2e} |"
        )
    lines.append(
        "\nRatio < 1: two processes finish a step faster than one. Both stages should agree to float rounding: SFT has "
        "no sampling, and RL draws each completion with noise keyed by its global row (cmva.sampling), so 2 processes "
        "sample what 1 does (the test's tolerance: 1e-3 of the update, tests/unit/test_distributed.py)."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from bench.common import write_result

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6, help="optimisation steps per run")
    ap.add_argument("--reps", type=int, default=2, help="runs per stage and process count (best one reported)")
    args = ap.parse_args(argv)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="cmva-bench-ddp-") as tmp:
        res = json.loads(json.dumps(measure(Path(tmp), args.steps, args.reps)))  # int keys → str, as in the JSON file
    res |= {"steps": args.steps, "reps": args.reps, "total_s": round(time.time() - t0, 1)}
    print(Path(write_result("distributed", res, markdown(res))).read_text())


if __name__ == "__main__":
    main()
