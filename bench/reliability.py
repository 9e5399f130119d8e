"""Reliability of the serving chain, the pipeline and the artifact store under bad input and injected faults.

$ .venv/bin/python -m bench.reliability [--out DIR] [--requests N] [--only PART,…] [--skip-pipeline]

(a) fuzz: >= 2000 schema-fuzzed requests (hypothesis) over the transformer (V1, V2, OpenAI route) and the
    agent and aggregator predictors (V1, V2), in the packed and the separate topology: no 5xx, every 4xx
    names the problem; (b) kill: one agent SIGKILLed under 8 concurrent clients (separate topology): no
    failed request, later answers degraded; (c) pipeline: the local KFP pipeline killed mid-stage and rerun:
    finished stages reused, no half-written artifact; (d) s3: the S3 endpoint cut during a publish: a clear
    StorageError, nothing visible, a republish round-trips; (e) hang: one agent SIGSTOPped under 8 clients:
    no failed request, answers degraded; (f) restart: the packed predictor SIGKILLed and restarted under
    8 clients: only 503s while it is down, full answers once it is back; (g) body: 50 MB bodies get 413, the
    transformer's RSS grows < 100 MB; (h) unload: model load/unload refused on every server, the chain still
    answers; (i) cancel: a storm of clients that leave mid-request, then ordinary requests all answer in full;
    (j) manifest: a hostile `_manifest.json` on S3 writes nothing outside the cache.
Every part records the commit and the time it was measured at; parts not run keep their previous figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from bench.artifacts import WORK
from bench.common import RESULTS, git_commit, write_result
from bench.reliability_report import markdown

SMOKE = WORK / "smoke"


def smoke_artifacts() -> Path:
    """Tiny `cmva run --profile smoke` artifacts, built once (a few minutes) and kept under bench/.work/."""
    if not (SMOKE / "aggregator" / "adapter_model.safetensors").is_file():
        print("building smoke artifacts (cmva run --profile smoke) …", flush=True)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        cli = Path(sys.executable).parent / "cmva"
        subprocess.run([str(cli), "run", "--profile", "smoke", "--out", str(SMOKE)], check=True, env=env)
    return SMOKE


SERVER_500 = ("Exception in ASGI application", "exception_handler():", "inference_error_handler():")


def server_errors(log_dir: Path, limit: int = 5) -> list[str]:
    """Distinct server-side exceptions behind 500s: the last cmva frame and the exception line of each."""
    found: list[str] = []
    for log in sorted(log_dir.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if not any(m in line for m in SERVER_500) or "invalid_input_handler" in line:
                continue
            frame = ""
            for j in range(i + 1, min(i + 400, len(lines))):
                if 'File "' in lines[j] and "/cmva/" in lines[j]:
                    frame = f"{lines[j].strip()}: {lines[j + 1].strip()}"
                if re.match(r"^[A-Za-z_.]+(Error|Exception)\b", lines[j]):
                    entry = f"{log.name}: {frame} → {lines[j].strip()}"
                    if entry not in found:
                        found.append(entry)
                    break
    return found[:limit]


def stamp(part: dict) -> dict:
    """A part's figures with the commit and the time they were measured at."""
    return part | {"commit": git_commit(), "measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


class Fuzzing:
    """Fuzz results accumulated over the chains (topologies) fuzzed so far."""

    def __init__(self):
        self.cases, self.results, self.send_s, self.generate_s, self.tracebacks = [], [], 0.0, 0.0, []

    def run(self, chain, topology: str, n: int, values: list[str]) -> dict:
        from bench.reliability_chaos import base_urls
        from bench.reliability_fuzz import send_all
        from bench.reliability_fuzz_predictors import topology_cases

        t0 = time.time()
        cases = topology_cases(n, topology, values)
        self.generate_s += time.time() - t0
        t0 = time.time()
        with tqdm(total=len(cases), desc=f"fuzz {topology}", unit="req") as bar:
            results = send_all(base_urls(chain), cases, workers=4, progress=bar)
        self.send_s += time.time() - t0
        if any(r["status"] is not None and r["status"] >= 500 for r in results):
            self.tracebacks += server_errors(chain.logs)
        self.cases += cases
        self.results += results
        return self.summary()

    def summary(self) -> dict:
        from bench.reliability_fuzz import summarize
        from bench.reliability_fuzz_routes import stream_errors

        res = summarize(self.cases, self.results)
        res["by_topology"] = {}
        for t in sorted({c.endpoint.split("/")[0] for c in self.cases}):
            idx = [i for i, c in enumerate(self.cases) if c.endpoint.startswith(t + "/")]
            s = summarize([self.cases[i] for i in idx], [self.results[i] for i in idx])
            keys = ("total", "5xx", "4xx", "4xx_unnamed", "transport_errors", "valid_rejected", "malformed_accepted")
            res["by_topology"][t] = {k: s[k] for k in keys}
        res |= {"send_s": round(self.send_s, 1), "generate_s": round(self.generate_s, 1)}
        res["stream_errors"] = stream_errors(self.cases, self.results)  # 200s whose stream then failed
        if self.tracebacks:
            res["server_tracebacks"] = self.tracebacks[:5]
        return stamp(res)


# --only names → result keys
PARTS = {
    "fuzz": "fuzz",
    "kill": "kill_agent",
    "pipeline": "pipeline",
    "s3": "s3",
    "hang": "hang_agent",
    "restart": "restart_predictor",
    "body": "big_body",
    "unload": "unload",
    "cancel": "cancel_storm",
    "manifest": "hostile_manifest",
}


def previous_results(out: Path) -> dict:
    """Figures of the last run, to carry over the parts not run this time (--only, --skip-pipeline)."""
    prev = out / "reliability.json"
    return json.loads(prev.read_text()) if prev.is_file() else {}


def save(fresh: dict, previous: dict, out: str | None) -> Path:
    """Write what this run measured so far, plus the previous figures of the parts it has not (yet) run."""
    result = dict(fresh)
    for part in PARTS.values():
        if part not in fresh and part in previous:
            result[part] = previous[part]
            when = previous[part].get("measured_at") or previous.get("carried_over", {}).get(part, previous["date"])
            result.setdefault("carried_over", {})[part] = when
    result["pipeline_skipped"] = "pipeline" not in result
    return write_result("reliability", result, markdown(result), out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="results directory (default bench/results)")
    ap.add_argument("--requests", type=int, default=2400, help="fuzzed requests, all topologies (default 2400)")
    ap.add_argument("--skip-pipeline", action="store_true", help="skip the KFP kill/rerun part (≈5 min)")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts to run ({', '.join(PARTS)})")
    ap.add_argument("--topologies", default="packed,separate", help="chains to fuzz and to try unloading")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parts = set(args.only.split(",")) - ({"pipeline"} if args.skip_pipeline else set())
    if unknown := parts - set(PARTS):
        ap.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    topologies = [t for t in ("packed", "separate") if t in args.topologies.split(",")]
    WORK.mkdir(parents=True, exist_ok=True)
    previous = previous_results(Path(args.out) if args.out else RESULTS)
    result: dict = {}

    def done(part: str, figures: dict) -> None:  # results are written after every part: an interrupted run keeps them
        result[PARTS[part]] = figures if "commit" in figures else stamp(figures)
        save(result, previous, args.out)

    from bench import reliability_faults as faults

    if "s3" in parts:
        print("(d) S3 endpoint cut during a publish …", flush=True)
        done("s3", faults.s3_cut_during_publish(WORK))
    if "manifest" in parts:
        from bench.reliability_store import hostile_manifest

        print("(j) hostile manifest on S3 …", flush=True)
        done("manifest", hostile_manifest(WORK))
    if parts - {"s3", "manifest", "pipeline"}:
        artifacts = smoke_artifacts()
        run_chains(artifacts, parts, topologies, args.requests, done)
    for part, sig, letter in (("hang", signal.SIGSTOP, "e"), ("kill", signal.SIGKILL, "b")):
        if part in parts:
            print(f"({letter}) {sig.name} to an agent under load …", flush=True)
            hang = dict(sig=sig, agent_timeout_s=15.0, duration_s=50.0, kill_at_s=8.0) if part == "hang" else {}
            with tqdm(desc="load", unit="req") as bar:
                done(part, faults.kill_agent_under_load(artifacts, progress=bar, **hang))
    if "pipeline" in parts:
        print("(c) local KFP pipeline killed mid-stage, then rerun (≈5 min) …", flush=True)
        done("pipeline", faults.kfp_kill_and_rerun(WORK))
    print(save(result, previous, args.out))


def run_chains(artifacts: Path, parts: set[str], topologies: list[str], requests: int, done) -> None:
    """The parts that run on a started chain: packed (fuzz, body, unload, cancel, restart), then separate
    (fuzz, unload); each chain started once for all of them."""
    from bench import reliability_chaos as chaos
    from cmva.serving.launcher import free_port_block, start_chain
    from cmva.values import resolve_values

    values = [v.name for v in resolve_values(None)]
    fuzzing, unloads = Fuzzing(), []
    per_topology = requests // max(1, len(topologies))
    wanted = {"packed": {"fuzz", "body", "unload", "cancel", "restart"}, "separate": {"fuzz", "unload"}}
    for topology in ("packed", "separate"):
        here = parts & (wanted[topology] - ({"fuzz", "unload"} if topology not in topologies else set()))
        if not here:
            continue
        logs = artifacts / "serve-logs" / topology
        port = free_port_block(3 if topology == "packed" else 2 + len(values))
        print(f"starting the {topology} chain …", flush=True)
        with start_chain(str(artifacts), topology, port, log_dir=logs) as chain:
            if "fuzz" in here:
                print(f"(a) fuzzing {per_topology} requests, {topology} …", flush=True)
                done("fuzz", fuzzing.run(chain, topology, per_topology, values))
            if "body" in here:
                print("(g) 50 MB bodies …", flush=True)
                done("body", chaos.big_body(chain, values))
            if "unload" in here:
                print(f"(h) model load/unload attempts, {topology} …", flush=True)
                unloads.append(chaos.unload_attempts(chain, values, topology))
                done("unload", chaos.merge_unload(unloads))
            if "cancel" in here:
                print("(i) cancel storm …", flush=True)
                done("cancel", chaos.cancel_storm(chain, values))
            if "restart" in here:  # last: it replaces the chain's predictor process
                from bench.reliability_restart import restart_predictor

                print("(f) packed predictor killed and restarted under load …", flush=True)
                with tqdm(desc="load", unit="req") as bar:
                    done("restart", restart_predictor(chain, values, progress=bar))


if __name__ == "__main__":
    main()
