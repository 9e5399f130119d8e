"""The Markdown of bench/reliability: one table row per check (with the commit and time its part was measured
at), then notes with the details behind the figures."""

from __future__ import annotations

import json

from bench.common import verdict

# result key → (letter, what the part does), in the table's order
PARTS = {
    "fuzz": ("a", "schema fuzzing"),
    "kill_agent": ("b", "an agent SIGKILLed under load"),
    "pipeline": ("c", "local KFP pipeline killed mid-stage, rerun"),
    "s3": ("d", "S3 endpoint cut during a publish"),
    "hang_agent": ("e", "an agent hung (SIGSTOP) under load"),
    "restart_predictor": ("f", "packed predictor SIGKILLed and restarted under load"),
    "big_body": ("g", "a 50 MB body"),
    "unload": ("h", "model load/unload attempts"),
    "cancel_storm": ("i", "cancel storm"),
    "hostile_manifest": ("j", "hostile manifest on S3"),
}


def _zero(n: int) -> str:
    return verdict(n, 0, higher_is_better=False)


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def measured_at(r: dict, key: str) -> str:
    """'commit, time' of a part: its own stamp, else the run it was carried over from."""
    p = r.get(key) or {}
    if p.get("commit"):
        return f"{p['commit']}, {p['measured_at']}"
    if key in r.get("carried_over", {}):
        return f"not recorded (run of {r['carried_over'][key]})"
    return f"{r.get('commit', '?')}, {r.get('date', '?')}"


def _fuzz(f: dict) -> list[tuple[str, str, str]]:
    tops = f.get("by_topology", {})
    where = ", ".join(f"{t} {s['total']}" for t, s in tops.items()) or "packed"
    predictors = sum(n for e, n in f["by_endpoint"].items() if "agent." in e or "aggregator." in e)
    covered = f["total"] >= 2000 and {"packed", "separate"} <= set(tops) and predictors > 0
    return [
        ("(a) fuzzed requests over the transformer and the predictors",
         f"{f['total']} ({where}; {predictors} to predictors)", _met(covered) + " (target ≥ 2000, both topologies)"),
        ("(a) fuzzing: 5xx responses", f"{f['5xx']} of {f['total']}", _zero(f["5xx"])),
        ("(a) fuzzing: 4xx not naming the problem", f"{f['4xx_unnamed']} of {f['4xx']} 4xx", _zero(f["4xx_unnamed"])),
        ("(a) fuzzing: transport errors / timeouts", str(f["transport_errors"]), _zero(f["transport_errors"])),
        ("(a) fuzzing: valid requests rejected", str(f["valid_rejected"]), _zero(f["valid_rejected"])),
    ] + ([("(a) fuzzing: streams failing after their 200", f"{se['failed']} of {se['streams']}", _zero(se["failed"]))]
         if (se := f.get("stream_errors")) else [])  # fmt: skip


def _agent_fault(k: dict, letter: str, how: str) -> list[tuple[str, str, str]]:
    victim, after = k["killed"], k["after_kill"]
    return [
        (f"({letter}) `{victim}` {how}, {k['clients']} clients: failed requests", f"{k['failed']} of {k['total']}",
         _zero(k["failed"])),
        (f"({letter}) answers sent after the fault not marked degraded",
         f"{k['undegraded_after_kill']} of {after} ({k['degraded_missing_victim']} degraded, missing `{victim}`)",
         _zero(k["undegraded_after_kill"])),
    ]  # fmt: skip


def _restart(p: dict) -> list[tuple[str, str, str]]:
    back = p["recovered_after_restart_s"]
    return [
        (f"(f) packed predictor SIGKILLed, {p['clients']} clients: answers other than 503 while it was down",
         f"{p['during_outage_other']} of {p['during_outage']} ({json.dumps(p['during_outage_status'])}; in flight "
         f"at the recovery: {json.dumps(p.get('in_flight_at_recovery_status'))})", _zero(p["during_outage_other"])),
        (f"(f) requests hung (> {p['hang_threshold_s']:g} s)", f"{p['hung']} of {p['total']}", _zero(p["hung"])),
        ("(f) after recovery: answers not in full (200, not degraded)",
         f"{p['after_recovery_failed']} of {p['after_recovery']}", _zero(p["after_recovery_failed"])),
        ("(f) recovery", "never" if back is None else
         f"first full answer {back} s after the restart ({p['recovered_after_kill_s']} s after the kill; "
         f"predictor ready after {p['predictor_ready_after_restart_s']} s)", _met(back is not None)),
    ]  # fmt: skip


def _big_body(b: dict) -> list[tuple[str, str, str]]:
    n413 = sum(a["status"] == 413 for a in b["attempts"])
    return [
        (f"(g) {b['body_mb']} MB bodies (transformer V1, chunked V1, V2, OpenAI; agent predictor) → 413",
         f"{n413} of {len(b['attempts'])}; at most {b['max_sent_mb']} MB sent before the answer", _met(b["all_413"])),
        ("(g) transformer RSS growth while refusing them", f"{b['transformer_rss_growth_mb']} MB",
         verdict(b["transformer_rss_growth_mb"], 100, higher_is_better=False).replace(")", " MB)")),
        ("(g) the chain answers in full afterwards", str(b["answers_after_ok"]), _met(b["answers_after_ok"])),
    ]  # fmt: skip


def _unload(u: dict) -> list[tuple[str, str, str]]:
    servers = sorted({f"{a['topology']}/{a['server']}" for a in u["attempts"]})
    return [
        (f"(h) `POST /v2/repository/models/<m>/unload` and `…/load` ({len(servers)} servers): refused with 403",
         f"{u['refused_403']} of {u['total']}", _met(u["refused_403"] == u["total"])),
        ("(h) models not ready after an attempt", str(u["not_ready_after"]), _zero(u["not_ready_after"])),
        ("(h) the chain answers in full afterwards", str(u["answers_after_ok"]), _met(u["answers_after_ok"])),
    ]  # fmt: skip


def _cancel(c: dict) -> list[tuple[str, str, str]]:
    lo, hi = c["client_timeouts_s"]
    return [
        (f"(i) after {c['storm']} requests given up mid-request ({c['concurrency']} at a time, after {lo}–{hi} s): "
         f"ordinary requests failed", f"{c['after_failed']} of {c['after']} ({c['after_clients']} clients)",
         _zero(c["after_failed"])),
        ("(i) ordinary requests answered degraded", f"{c['after_degraded']} of {c['after']}", _zero(c["after_degraded"])),
    ]  # fmt: skip


def _manifest(m: dict) -> list[tuple[str, str, str]]:
    kinds = ", ".join(a["kind"] for a in m["attempts"])
    return [
        (f"(j) hostile `_manifest.json` on S3 ({kinds}): refused naming the path", f"{m['refused']} of "
         f"{len(m['attempts'])}", _met(m["refused"] == len(m["attempts"]))),
        ("(j) files written outside the cache", str(m["written_outside_cache"]), _zero(m["written_outside_cache"])),
    ]  # fmt: skip


def _legacy(r: dict, key: str) -> list[tuple[str, str, str]]:
    if key == "kill_agent":
        return _agent_fault(r[key], "b", "SIGKILLed")
    if key == "hang_agent":
        return _agent_fault(r[key], "e", f"hung (SIGSTOP, agent timeout {r[key].get('agent_timeout_s')} s)")
    if key == "pipeline":
        p = r[key]
        finished = len(p["finished_before_kill"])
        return [
            ("(c) KFP killed mid-stage: half-written artifacts", str(len(p["incomplete_artifacts"])),
             _zero(len(p["incomplete_artifacts"]))),
            ("(c) rerun: stages finished before the kill recomputed",
             f"{finished - len(p['reused'])} of {finished} (reused: {', '.join(p['reused']) or '—'})",
             _zero(finished - len(p["reused"]))),
            ("(c) rerun completes, published artifacts verify",
             f"rc {p['rerun_rc']}, {len(p['serving_verified'])} artifacts checksum-verified",
             _met(p["rerun_rc"] == 0 and p["report_written"])),
        ]  # fmt: skip
    s = r[key]
    clear = s.get("error_type") is not None and s.get("error_names_endpoint")
    hidden = not s["visible_after_cut"] and s["get_after_cut"].startswith("ArtifactNotFoundError")
    up = f"{s['objects_uploaded_before_cut']} of {s['files']} files uploaded, exists()={s['visible_after_cut']}"
    trip = f"{s.get('roundtrip_files', 0)} files, checksums ok={s.get('roundtrip_checksums_ok')}"
    return [
        ("(d) S3 cut mid-publish: error names the endpoint", f"{s.get('error_type')} after {s['fail_after_s']} s",
         _met(clear)),
        ("(d) partial artifact invisible (moto queried directly)", up, _met(hidden)),
        ("(d) republish after restart round-trips", trip, _met(bool(s.get("roundtrip_checksums_ok")))),
    ]  # fmt: skip


RENDER = {
    "fuzz": lambda r: _fuzz(r["fuzz"]),
    "restart_predictor": lambda r: _restart(r["restart_predictor"]),
    "big_body": lambda r: _big_body(r["big_body"]),
    "unload": lambda r: _unload(r["unload"]),
    "cancel_storm": lambda r: _cancel(r["cancel_storm"]),
    "hostile_manifest": lambda r: _manifest(r["hostile_manifest"]),
}


def rows(r: dict) -> list[tuple[str, str, str, str]]:
    """(check, measured, target and verdict, measured at) for every part in the result."""
    out = []
    for key, (letter, what) in PARTS.items():
        if key not in r:
            out.append((f"({letter}) {what}", "not run", "—", "—"))
            continue
        render = RENDER.get(key, lambda r, key=key: _legacy(r, key))
        try:
            out += [(*row, measured_at(r, key)) for row in render(r)]
        except (KeyError, TypeError) as e:  # figures carried over from an older version of this bench
            out.append((f"({letter}) {what}", f"figures in an older format (no {e})", "—", measured_at(r, key)))
    return out


def _code(text: str) -> str:
    return text.replace("`", "'").replace("\n", " ")


def _fuzz_notes(f: dict) -> list[str]:
    endpoints = ", ".join(f"{e} {n}" for e, n in f["by_endpoint"].items())
    notes = [
        f"Fuzzing: {f['total']} requests ({endpoints}), statuses {json.dumps(f['status'])}, "
        f"{len(f['kinds'])} mutation kinds, {f['send_s']} s; {f['malformed_accepted']} malformed requests "
        f"were answered 200 ({json.dumps(f['malformed_accepted_by_kind'])})."
    ]
    for t, s in f.get("by_topology", {}).items():
        notes.append(f"Fuzzing, {t}: {json.dumps(s)}.")
    notes += [f"server error behind a 5xx: `{_code(e)}`" for e in f.get("server_tracebacks", [])]
    for ex in f.get("stream_errors", {}).get("examples", [])[:3]:
        notes.append(f"stream error after a 200: `{ex['endpoint']}:{ex['kind']}`: {ex['error'][:200]!r}")
    for what in ("5xx", "4xx_unnamed", "transport_errors", "valid_rejected"):
        for ex in f["examples"][what][:3]:
            notes.append(
                f"{what}: `{ex['endpoint']}:{ex['kind']}` → {ex['status']}: {ex['error'][:200]!r} "
                f"(field {ex['expected_field']}); body `{_code(ex['body'][:120])}`"
                + (f"; the same request on a fresh connection: {ex.get('fresh_retry')}" if what == "transport_errors" else "")
            )  # fmt: skip
    return notes


def notes(r: dict) -> list[str]:
    try:
        return _notes(r)
    except (KeyError, TypeError) as e:  # figures carried over from an older version of this bench
        return [f"(notes not rendered: figures in an older format, no {e})"]


def _notes(r: dict) -> list[str]:
    out = []
    if f := r.get("fuzz"):
        out += _fuzz_notes(f)
    for key, word in (("kill_agent", "Kill"), ("hang_agent", "Hang")):
        if k := r.get(key):
            out.append(
                f"{word}: after {k.get('killed_after_s')} s of load; {k['before_kill']} answered before the fault, "
                f"{k['in_flight_at_kill']} in flight, {k['after_kill']} sent after; p50 latency {k['p50_latency_s']} s, "
                f"max {k['max_latency_s']} s; chain start {k['startup_s']} s"
                + (f"; after SIGCONT a full answer within {k['answers_in_full_after_sigcont_s']} s." if key == "hang_agent" else ".")
            )  # fmt: skip
    if p := r.get("restart_predictor"):
        out.append(
            f"Predictor restart: killed after {p['killed_after_s']} s of load, down {p['down_s']} s; {p['total']} requests "
            f"({p['before_kill']} before the kill, {p['during_outage']} during the outage, {p['after_recovery']} after); "
            f"503s without Retry-After: {p['during_outage_503_without_retry_after']}; slowest answer while down "
            f"{p['max_outage_latency_s']} s; transformer ready in {p['transformer_ready_while_down']} of "
            f"{p['transformer_ready_probes_while_down']} probes while down; after recovery "
            f"{p['after_recovery_same_answer_as_before_kill']} answers identical to the same client's before the kill; "
            f"other statuses: {p['during_outage_other_examples']}."
        )  # fmt: skip
    if b := r.get("big_body"):
        out += [
            f"Big body: {a['server']} `{a['path']}` ({a['body']}) → {a['status']} after {a['sent_mb']} MB sent, "
            f"{a['answer_s']} s; RSS {a['rss_before_mb']} MB + {a['rss_growth_mb']} MB."
            for a in b["attempts"]
        ]
    if u := r.get("unload"):
        by_status: dict[int, list] = {}
        for a in u["attempts"]:
            by_status.setdefault(a["status"], []).append(a)
        out.append(
            "Load/unload answers: "
            + "; ".join(f"{len(v)} × {s} (e.g. {_code(str(v[0]['error']))[:120]!r})" for s, v in by_status.items())
            + "."
        )
    if c := r.get("cancel_storm"):
        out.append(
            f"Cancel storm: {json.dumps(c['storm_outcomes'])} in {c['storm_s']} s; the {c['after']} ordinary requests "
            f"took {c['after_s']} s (slowest {c['after_max_latency_s']} s); batcher queue depth afterwards "
            f"{json.dumps(c['queue_depth_after'])}; new tracebacks in the server logs: {c['server_tracebacks']}."
        )
    if m := r.get("hostile_manifest"):
        out += [
            f"Hostile manifest, {a['kind']} `{a['path']}`: {a['error_type']}: {_code(a['error'])[:200]}"
            for a in m["attempts"]
        ]
    if p := r.get("pipeline"):
        out.append(
            f"Pipeline: killed after {p['killed_after_s']} s; the rerun executed {', '.join(p['rerun_executed'])} "
            f"in {p['rerun_s']} s; scratch dirs the kill left beside the outputs: {len(p['partial_scratch_dirs'])}."
        )
    if s := r.get("s3"):
        out.append(f"S3: proxy cut after {s.get('cut_after_mb')} MB; first publish: {s['first_publish'][:300]}")
    for part, when in r.get("carried_over", {}).items():
        out.append(f"`{part}` figures carried over from the run of {when} (not rerun this time).")
    return out


def markdown(r: dict) -> str:
    table = ["| check | measured | target | measured at (commit, time) |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(r)]
    return "\n".join(table) + "\n\n" + "\n".join(f"- {n}" for n in notes(r)) + "\n"
