"""Reliability of the serving chain, the pipeline and the artifact store under bad input and injected faults.

$ .venv/bin/python -m bench.reliability [--out DIR] [--requests N] [--skip-pipeline]

(a) >= 1000 schema-fuzzed requests (hypothesis) against V1, V2 and the OpenAI route: no 5xx, every 4xx
    names the offending field; (b) one agent SIGKILLed under 8 concurrent clients (separate topology):
    no failed request, later answers degraded; (c) the local KFP pipeline killed mid-stage and rerun:
    finished stages reused, no half-written artifact; (d) the S3 endpoint cut during a publish: a clear
    StorageError, nothing visible, a republish round-trips.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from bench.artifacts import WORK
from bench.common import RESULTS, verdict, write_result

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


def run_fuzz_part(artifacts: Path, n: int) -> dict:
    from bench.reliability_fuzz import generate_cases, run_fuzz
    from cmva.serving.launcher import free_port_block, start_chain

    t0 = time.time()
    cases = generate_cases(n)
    gen_s = time.time() - t0
    logs = artifacts / "serve-logs" / "fuzz"
    with start_chain(str(artifacts), "packed", free_port_block(3), log_dir=logs) as chain:
        t0 = time.time()
        with tqdm(total=len(cases), desc="fuzz", unit="req") as bar:
            res = run_fuzz(chain.url, cases, workers=4, progress=bar)
        res["send_s"] = round(time.time() - t0, 1)
    res["generate_s"] = round(gen_s, 1)
    res["serve_logs"] = str(logs)
    if res["5xx"]:
        res["server_tracebacks"] = server_errors(logs)
    return res


def _zero(n: int) -> str:
    return verdict(n, 0, higher_is_better=False)


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _rows(r: dict) -> list[tuple[str, str, str]]:
    """(check, measured, target and verdict) for every part that ran."""
    rows = []
    if f := r.get("fuzz"):
        rows += [
            ("(a) fuzzing: 5xx responses", f"{f['5xx']} of {f['total']}", _zero(f["5xx"])),
            ("(a) fuzzing: 4xx not naming the field", f"{f['4xx_unnamed']} of {f['4xx']} 4xx", _zero(f["4xx_unnamed"])),
            ("(a) fuzzing: transport errors / timeouts", str(f["transport_errors"]), _zero(f["transport_errors"])),
            ("(a) fuzzing: valid requests rejected", str(f["valid_rejected"]), _zero(f["valid_rejected"])),
        ]
    if k := r.get("kill_agent"):
        victim, after = k["killed"], k["after_kill"]
        rows += [
            (f"(b) `{victim}` SIGKILLed, {k['clients']} clients: failed requests",
             f"{k['failed']} of {k['total']}", _zero(k["failed"])),
            ("(b) answers sent after the kill not marked degraded",
             f"{k['undegraded_after_kill']} of {after} ({k['degraded_missing_victim']} degraded, missing `{victim}`)",
             _zero(k["undegraded_after_kill"])),
        ]  # fmt: skip
    if p := r.get("pipeline"):
        finished = len(p["finished_before_kill"])
        rows += [
            ("(c) KFP killed mid-stage: half-written artifacts", str(len(p["incomplete_artifacts"])),
             _zero(len(p["incomplete_artifacts"]))),
            ("(c) rerun: stages finished before the kill recomputed",
             f"{finished - len(p['reused'])} of {finished} (reused: {', '.join(p['reused']) or '—'})",
             _zero(finished - len(p["reused"]))),
            ("(c) rerun completes, published artifacts verify",
             f"rc {p['rerun_rc']}, {len(p['serving_verified'])} artifacts checksum-verified",
             _met(p["rerun_rc"] == 0 and p["report_written"])),
        ]  # fmt: skip
    else:
        rows.append(("(c) KFP killed mid-stage and rerun", "skipped (--skip-pipeline)", "—"))
    if s := r.get("s3"):
        clear = s.get("error_type") is not None and s.get("error_names_endpoint")
        hidden = not s["visible_after_cut"] and s["get_after_cut"].startswith("ArtifactNotFoundError")
        up = f"{s['objects_uploaded_before_cut']} of {s['files']} files uploaded, exists()={s['visible_after_cut']}"
        trip = f"{s.get('roundtrip_files', 0)} files, checksums ok={s.get('roundtrip_checksums_ok')}"
        rows += [
            (
                "(d) S3 cut mid-publish: error names the endpoint",
                f"{s.get('error_type')} after {s['fail_after_s']} s",
                _met(clear),
            ),
            ("(d) partial artifact invisible (moto queried directly)", up, _met(hidden)),
            ("(d) republish after restart round-trips", trip, _met(bool(s.get("roundtrip_checksums_ok")))),
        ]
    return rows


def _code(text: str) -> str:
    return text.replace("`", "'").replace("\n", " ")


def _notes(r: dict) -> list[str]:
    notes = []
    if f := r.get("fuzz"):
        endpoints = ", ".join(f"{e} {n}" for e, n in f["by_endpoint"].items())
        notes.append(
            f"Fuzzing: {f['total']} requests ({endpoints}), statuses {json.dumps(f['status'])}, "
            f"{len(f['kinds'])} mutation kinds, {f['send_s']} s; {f['malformed_accepted']} malformed requests "
            f"were answered 200 ({json.dumps(f['malformed_accepted_by_kind'])})."
        )
        notes += [f"server error behind a 5xx: `{_code(e)}`" for e in f.get("server_tracebacks", [])]
        for what in ("5xx", "4xx_unnamed", "transport_errors", "valid_rejected"):
            for ex in f["examples"][what][:3]:
                notes.append(
                    f"{what}: `{ex['endpoint']}:{ex['kind']}` → {ex['status']}: {ex['error'][:200]!r} "
                    f"(field {ex['expected_field']}); body `{_code(ex['body'][:120])}`"
                    + (
                        f"; the same request on a fresh connection: {ex.get('fresh_retry')}"
                        if what == "transport_errors"
                        else ""
                    )
                )
    if k := r.get("kill_agent"):
        notes.append(
            f"Kill: after {k.get('killed_after_s')} s of load; {k['before_kill']} answered before the kill, {k['in_flight_at_kill']} in flight, "
            f"{k['after_kill']} sent after; p50 latency {k['p50_latency_s']} s, max {k['max_latency_s']} s; "
            f"chain start {k['startup_s']} s."
        )
    if p := r.get("pipeline"):
        notes.append(
            f"Pipeline: killed after {p['killed_after_s']} s; the rerun executed {', '.join(p['rerun_executed'])} "
            f"in {p['rerun_s']} s; scratch dirs the kill left beside the outputs: {len(p['partial_scratch_dirs'])}."
        )
    if s := r.get("s3"):
        notes.append(f"S3: proxy cut after {s.get('cut_after_mb')} MB; first publish: {s['first_publish'][:300]}")
    for part, when in r.get("carried_over", {}).items():
        notes.append(f"`{part}` figures carried over from the run of {when} (not rerun this time).")
    return notes


def markdown(r: dict) -> str:
    table = ["| check | measured | target |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in _rows(r)]
    return "\n".join(table) + "\n\n" + "\n".join(f"- {n}" for n in _notes(r)) + "\n"


PARTS = ("fuzz", "kill_agent", "pipeline", "s3")


def previous_results(out: Path) -> dict:
    """Figures of the last run, to carry over the parts not run this time (--only, --skip-pipeline)."""
    prev = out / "reliability.json"
    return json.loads(prev.read_text()) if prev.is_file() else {}


def save(fresh: dict, previous: dict, out: str | None) -> Path:
    """Write what this run measured so far, plus the previous figures of the parts it has not (yet) run."""
    result = dict(fresh)
    for part in PARTS:
        if part not in fresh and part in previous:
            result[part] = previous[part]
            result.setdefault("carried_over", {})[part] = previous.get("carried_over", {}).get(part, previous["date"])
    result["pipeline_skipped"] = "pipeline" not in result
    return write_result("reliability", result, markdown(result), out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="results directory (default bench/results)")
    ap.add_argument("--requests", type=int, default=1000, help="fuzzed requests (default 1000)")
    ap.add_argument("--skip-pipeline", action="store_true", help="skip the KFP kill/rerun part (≈5 min)")
    ap.add_argument("--only", default="fuzz,kill,pipeline,s3", help="comma-separated parts to run")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parts = set(args.only.split(",")) - ({"pipeline"} if args.skip_pipeline else set())
    WORK.mkdir(parents=True, exist_ok=True)
    previous = previous_results(Path(args.out) if args.out else RESULTS)
    result: dict = {}
    from bench import reliability_faults as faults

    # Results are written after every part: an interrupted run keeps what it measured.
    if "s3" in parts:
        print("(d) S3 endpoint cut during a publish …", flush=True)
        result["s3"] = faults.s3_cut_during_publish(WORK)
        save(result, previous, args.out)
    if parts & {"fuzz", "kill"}:
        artifacts = smoke_artifacts()
    if "fuzz" in parts:
        print(f"(a) fuzzing {args.requests} requests …", flush=True)
        result["fuzz"] = run_fuzz_part(artifacts, args.requests)
        save(result, previous, args.out)
    if "kill" in parts:
        print("(b) killing an agent under load …", flush=True)
        with tqdm(desc="load", unit="req") as bar:
            result["kill_agent"] = faults.kill_agent_under_load(artifacts, progress=bar)
        save(result, previous, args.out)
    if "pipeline" in parts:
        print("(c) local KFP pipeline killed mid-stage, then rerun (≈5 min) …", flush=True)
        result["pipeline"] = faults.kfp_kill_and_rerun(WORK)
    print(save(result, previous, args.out))


if __name__ == "__main__":
    main()
