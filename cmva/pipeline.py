"""The whole CMVA-GS pipeline in one process, stage by stage, resumable.

Each stage writes an artifact (a directory with a sha256 manifest) into the run's store; a stage whose
artifact is complete is reused, not recomputed, so a run killed mid-way restarts where it stopped.
The stages are those the CLI subcommands and the KFP components run (cmva.stages).

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

    def __init__(self, out: str | Path, profile: Profile, mic: str | Path, socialchem: str | Path, record: bool = True):
        """`record`: write the settings into the run's run.json (False: a command writing elsewhere reads the run)."""
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
        if record:
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

    def call(self, st, value: str | None = None, nproc: int = 1, eval_data: Path | None = None):
        """The StageCall of stage `st` in this run: its inputs are the run's finished artifacts.

        Raises:
            ValueError: Naming the missing artifact and the command that makes it.
        """
        from cmva.stages import BY_OUTPUT, StageCall, input_artifacts

        inputs: dict = {}
        for name, artifact in input_artifacts(st.name, [v.name for v in self.values]).items():
            many = isinstance(artifact, dict)  # "agents": {value: artifact}
            for a in artifact.values() if many else [artifact]:
                if not self.store.exists(a):
                    maker = BY_OUTPUT["agent" if name == "agents" else name].name
                    raise ValueError(f"{st.name} needs {a!r}, not in {self.root}: run `cmva {maker}` first")
            inputs[name] = {k: self.store.get(a) for k, a in artifact.items()} if many else self.store.get(artifact)
        data = {"mic": self.mic, "socialchem": self.socialchem, "eval": eval_data}
        return StageCall(self.profile, self.values, {d: data[d] for d in st.data}, inputs, value, nproc)

    def run_stage(self, st, value: str | None = None, nproc: int = 1) -> Path:
        """Stage `st` into its artifact, unless that exists (resumable)."""
        return self.stage(st.artifact_of(value), lambda d: st.run(d, self.call(st, value, nproc)))


def run_pipeline(
    profile: Profile, out: str | Path, mic: str | Path | None = None, socialchem: str | Path | None = None
) -> dict:
    """Run every stage of CMVA-GS (cmva.stages, in order; per-value stages once per value); return the evaluation
    report (also written to <out>/eval/)."""
    from tqdm.auto import tqdm

    from cmva.data import SAMPLE_MIC, SAMPLE_SOCIALCHEM
    from cmva.stages import STAGES

    t0 = time.time()
    run = Run(out, profile, mic or SAMPLE_MIC, socialchem or SAMPLE_SOCIALCHEM)
    names = [v.name for v in run.values]
    steps = [(st, v) for st in STAGES for v in (names if st.per_value else [None])]
    bar = tqdm(total=len(steps), desc="cmva pipeline", unit="stage")
    for st, value in steps:
        bar.set_postfix_str(st.artifact_of(value))
        last = run.run_stage(st, value)
        bar.update(1)
    bar.close()
    wall = round(time.time() - t0, 1)
    (run.root / "timings.json").write_text(json.dumps({"stages_s": run.timings, "total_s": wall}, indent=2))
    report = json.loads((last / "report.json").read_text())
    return {"report": report, "report_md": str(last / "report.md"), "timings": run.timings, "total_s": wall}
