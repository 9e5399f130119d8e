"""The whole CMVA-GS pipeline in one process, stage by stage, resumable.

Each stage writes an artifact (a directory with a sha256 manifest) into the run's store; a stage whose
artifact is complete is reused, not recomputed, so a run killed mid-way restarts where it stopped.
The stage functions are the same ones the CLI subcommands and the KFP components call.

    $ cmva run --profile smoke --out runs/smoke
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from cmva.config import Profile
from cmva.storage import LocalStore

log = logging.getLogger(__name__)

RUN_FILE = "run.json"


class Run:
    """A run directory: artifacts published atomically into it, stage timings recorded."""

    def __init__(self, out: str | Path, profile: Profile, mic: str | Path, socialchem: str | Path):
        from cmva.values import resolve_values

        self.store = LocalStore(out)
        self.root = self.store.root
        self.profile, self.mic, self.socialchem = profile, Path(mic), Path(socialchem)
        self.values = resolve_values(profile.values)
        self.timings: dict[str, float] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        run_file = self.root / RUN_FILE
        info = {
            "profile": profile.model_dump(exclude={"gate"}),  # the gate decides publishing, no artifact
            "mic": str(self.mic.resolve()),
            "socialchem": str(self.socialchem.resolve()),
        }
        if run_file.is_file():
            old = json.loads(run_file.read_text())
            if {k: old.get(k) for k in info} != info:
                raise ValueError(
                    f"{self.root} holds a run with other settings or data; use another --out or delete it "
                    "(finished stages are reused only for the same settings)"
                )
        run_file.write_text(json.dumps(info, indent=2))

    def stage(self, name: str, fn: Callable[[Path], object]) -> Path:
        """Run `fn(dir)` unless artifact `name` exists; what it writes into `dir` is published atomically."""
        if self.store.exists(name):
            log.info("stage %-22s reused (%s)", name, self.store.uri_of(name))
            self.timings.setdefault(name, 0.0)
            return self.store.get(name)
        log.info("stage %-22s running", name)
        t0 = time.time()
        self.store.create(name, fn)
        self.timings[name] = round(time.time() - t0, 1)
        log.info("stage %-22s done in %.1f s", name, self.timings[name])
        return self.store.get(name)


def run_pipeline(
    profile: Profile, out: str | Path, mic: str | Path | None = None, socialchem: str | Path | None = None
) -> dict:
    """Run every stage of CMVA-GS; return the evaluation report (also written to <out>/eval/)."""
    from tqdm.auto import tqdm

    from cmva import stages
    from cmva.data import SAMPLE_MIC, SAMPLE_SOCIALCHEM

    t0 = time.time()
    run = Run(out, profile, mic or SAMPLE_MIC, socialchem or SAMPLE_SOCIALCHEM)
    names = [v.name for v in run.values]
    steps = ["base", "rewards", *(f"agents/{v}" for v in names), "aggregator-data", "aggregator", "eval"]
    bar = tqdm(total=len(steps), desc="cmva pipeline", unit="stage")

    def step(name, fn):
        bar.set_postfix_str(name)
        path = run.stage(name, fn)
        bar.update(1)
        return path

    base = step("base", lambda d: stages.import_base_stage(d, profile))
    rewards = step("rewards", lambda d: stages.rewards_stage(d, run.socialchem, run.mic, run.values, profile))
    agents = {
        v: step(f"agents/{v}", lambda d, v=v: stages.agent_stage(d, v, base, rewards, run.mic, run.values, profile))
        for v in names
    }
    data = step(
        "aggregator-data",
        lambda d: stages.aggregator_data_stage(d, base, agents, rewards, run.mic, run.values, profile),
    )
    step("aggregator", lambda d: stages.aggregator_stage(d, base, data, profile))
    ev = step("eval", lambda d: stages.evaluate_stage(d, run.root, run.mic, run.values, profile))
    bar.close()
    wall = round(time.time() - t0, 1)
    (run.root / "timings.json").write_text(json.dumps({"stages_s": run.timings, "total_s": wall}, indent=2))
    report = json.loads((ev / "report.json").read_text())
    return {"report": report, "report_md": str(ev / "report.md"), "timings": run.timings, "total_s": wall}
