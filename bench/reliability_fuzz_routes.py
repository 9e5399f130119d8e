"""Schema fuzzing of the predictors' newer routes (bench/reliability, part a, beside
bench.reliability_fuzz_predictors):

- the aggregator's stream, `POST /v1/models/<name>:stream` (cmva.serving.stream_route): the aggregator's V1
  cases, where a request of several instances must be refused naming `instances` (a stream answers one);
  a 200 is NDJSON whose last line must be the usage, never an error line;
- the OpenAI chat completions of every predictor, `POST /openai/v1/chat/completions` (cmva.serving.chat_route):
  one mutation of a valid body whose `model` is an adapter the server serves.

Labelled `<topology>/aggregator.stream`, `<topology>/agent.chat` and `<topology>/aggregator.chat`.
"""

from __future__ import annotations

import collections
import itertools
import json
from dataclasses import replace

from hypothesis import strategies as st

from bench.reliability_fuzz import (
    DELETE,
    VALUES,
    Case,
    _body_level,
    _draw,
    _enc,
    _set,
    bad_tokens,
    key,
    profile,
    question,
)
from bench.reliability_fuzz_predictors import (
    DEEP,
    DEEP_PATHS,
    _not,
    aggregator_case,
    answer_text,
    finite_wrong_type,
    predictor_targets,
)
from cmva.serving.chat_request import MAX_MESSAGES_CHARS

CHAT_ROUTE = "/openai/v1/chat/completions"
CHAT_FIELDS = {"model", "messages", "max_tokens", "min_tokens", "temperature", "stream"}
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=60)}
)


def as_stream(case: Case) -> Case:
    """An aggregator V1 case sent to the stream route, which answers one instance: a body the V1 route accepts
    (or may accept) keeps its first instance when it has two, and is refused naming `instances` with three."""
    try:
        body = json.loads(case.body)
        n = len(body["instances"]) if isinstance(body, dict) and isinstance(body.get("instances"), list) else 0
    except (ValueError, RecursionError):
        n = 0
    if n == 2 and case.expect != "error":  # the mutated instance may go: a valid body, which "either" allows
        body["instances"] = body["instances"][:1]
        case = replace(case, body=_enc(body), expect="either" if case.expect == "either" else "ok")
    elif n > 2 and case.expect != "error":
        case = replace(case, expect="error", paths=case.paths + (("instances",),))
    return replace(case, endpoint="aggregator.stream")


@st.composite
def one_answer_case(draw) -> Case:
    """A valid stream request: one instance (derandomized aggregator cases are mostly malformed)."""
    prof = draw(profile)
    answered = draw(st.lists(st.sampled_from(sorted(prof)), unique=True))
    inst = {"question": draw(question), "profile": prof, "answers": {v: draw(answer_text) for v in answered}}
    tokens = draw(st.integers(1, 8))
    return Case(
        "aggregator.stream", "valid", _enc({"instances": [inst], "parameters": {"max_new_tokens": tokens}}), (), "ok"
    )


def stream_error(raw: str) -> str | None:
    """What is wrong with a 200 from the stream route (NDJSON ending with its usage line), or None.

    >>> stream_error('{"text": "Hi"}\\n{"usage": {"prompt_tokens": 3, "completion_tokens": 1}}\\n') is None
    True
    >>> stream_error('{"text": "Hi"}\\n{"error": "aggregator generation failed: boom"}\\n')
    'error line: aggregator generation failed: boom'
    """
    lines = [line for line in raw.splitlines() if line.strip()]
    try:
        last = json.loads(lines[-1]) if lines else None
    except ValueError:
        return f"malformed last line: {lines[-1][:200]}"
    if isinstance(last, dict) and "error" in last:
        return f"error line: {last['error']}"
    if not (isinstance(last, dict) and "usage" in last):
        return f"ended without its usage line: {raw[-200:]!r}"
    return None


@st.composite
def chat_case(draw, served: tuple[str, ...], kinds: tuple[str, ...], asked: tuple[str, ...] = ()) -> Case:
    """A chat-completions body for a predictor serving the adapters `served`, asking one of `asked` (default:
    `served`), with one of `kinds` of mutation."""
    adapter = draw(st.sampled_from(asked or served))
    target = "aggregator" if adapter == "aggregator" else "agent"
    if (c := _body_level(draw, f"{target}.chat")) is not None:
        return c
    msgs = draw(st.lists(message, max_size=3)) + [{"role": "user", "content": draw(question)}]
    body = {"model": adapter, "messages": msgs, "max_tokens": 4}
    if draw(st.booleans()):
        body["temperature"] = 0
    kind = draw(st.sampled_from(kinds))
    expect, paths = "error", None
    if kind == "valid":
        expect, paths = "ok", ()
    elif kind == "extra":  # fields an OpenAI client may send: ignored or refused by name
        k = draw(st.sampled_from(["top_p", "n", "user", "seed", "stop", "logprobs", "tools"]) | key)
        k = k if k not in CHAT_FIELDS else "user"
        body[k] = draw(finite_wrong_type | st.floats(0, 2))
        expect, paths = "either", ((k,),)
    elif kind == "model.other":  # an adapter served elsewhere, or none at all
        others = [a for a in (*VALUES, "aggregator") if a not in served]
        other = st.sampled_from(others or ["greed"]) | st.text(max_size=10) | _not(type(None))
        body["model"] = draw(other.filter(lambda m: m not in served))
        paths = (("model",),)
    elif kind == "min_tokens":
        body["min_tokens"] = draw(st.integers(5, 600) | bad_tokens.filter(lambda x: x not in (0, None)))
        paths = (("min_tokens",), ("min_new_tokens",))
    else:
        path, value, paths = {
            "model.missing": (("model",), st.just(DELETE), None),
            "stream": (("stream",), st.sampled_from([1, "yes", "false", [1], {"a": 1}]), None),
            "temperature": (("temperature",), _not(type(None)).filter(_not_greedy) | st.floats(0.01, 2), None),
            "max_tokens": (("max_tokens",), bad_tokens.filter(lambda x: x is not None), None),
            "messages.missing": (("messages",), st.just(DELETE), None),
            "messages.type": (("messages",), _not(list), None),
            "messages.empty": (("messages",), st.just([]), None),
            "messages.role": (("messages", 0, "role"), st.sampled_from(["tool", "developer", "", 3, None]), None),
            "messages.item_type": (("messages", 0), _not(dict), None),
            "content.type": (("messages", 0, "content"), _not(str), None),
            "content.too_long": (("messages", 0, "content"), st.just("x" * (MAX_MESSAGES_CHARS + 1)), None),
        }[kind]  # fmt: skip
        _set(body, path, draw(value))
        paths = paths or ((path[0],),)
    return Case(f"{target}.chat", kind, _enc(body), paths, expect)


def _not_greedy(t) -> bool:
    return isinstance(t, bool) or t != 0


CHAT_KINDS = [
    *["valid"] * 3,
    "extra", "model.other", "model.missing", "stream", "temperature", "max_tokens", "min_tokens", "messages.missing",
    "messages.type", "messages.empty", "messages.role", "messages.item_type", "content.type", "content.too_long",
]  # fmt: skip


def route_cases(n: int, topology: str, values: list[str], model: str = "cmva") -> list[Case]:
    """About `n` cases for one chain: a third to the aggregator's stream route (of which a third valid, one
    instance), two thirds to the chat route of its predictors (spread over them), plus a body nested DEEP levels
    for each route; interleaved."""
    server, name = predictor_targets(topology, values, model)["aggregator"][0]
    stream = f"/v1/models/{name}:stream"
    streams = [
        [
            replace(as_stream(c), endpoint=f"{topology}/aggregator.stream", server=server, route=stream)
            for c in _some(aggregator_case(), n // 3 - n // 9)
        ],
        [
            replace(c, endpoint=f"{topology}/aggregator.stream", server=server, route=stream)
            for c in _some(one_answer_case(), n // 9)
        ],  # fmt: skip
    ]
    if topology == "packed":  # (server, adapters served, adapters asked): the agents' and the aggregator's
        served = (*values, "aggregator")
        servers = [("packed", served, tuple(values)), ("packed", served, ("aggregator",))]
    else:
        servers = [(v, (v,), (v,)) for v in values] + [(server, ("aggregator",), ("aggregator",))]
    # Kinds dealt round-robin over the servers: every kind is sent (hypothesis' first draws of a sampled kind
    # repeat a few), and with several servers each gets its share of them.
    plan = collections.Counter()
    for i, kind in zip(range(n - n // 3), itertools.cycle(CHAT_KINDS), strict=False):
        plan[i % len(servers), kind] += 1
    for (k, kind), count in plan.items():
        srv, served, asked = servers[k]
        streams.append(
            [replace(c, endpoint=f"{topology}/{c.endpoint}", server=srv, route=CHAT_ROUTE)
             for c in _some(chat_case(served, (kind,), asked), count)]
        )  # fmt: skip
    nest = "[" * DEEP + "]" * DEEP
    deep_stream = {"instances": [{"question": "Fair?", "profile": {"care": 1.0}, "answers": "@"}]}
    first, _, asked = servers[0]
    deep_chat = {"model": asked[0], "messages": "@"}
    deep = [
        Case(f"{topology}/aggregator.stream", "deep", json.dumps(deep_stream).replace('"@"', nest).encode(),
             DEEP_PATHS, server=server, route=stream),
        Case(f"{topology}/agent.chat", "deep", json.dumps(deep_chat).replace('"@"', nest).encode(), DEEP_PATHS,
             server=first, route=CHAT_ROUTE),
    ]  # fmt: skip
    return [c for group in itertools.zip_longest(*streams) for c in group if c is not None] + deep


def _some(strategy, k: int) -> list[Case]:
    return _draw(strategy, k) if k > 0 else []


def stream_errors(cases: list[Case], results: list[dict]) -> dict:
    """The stream route's 200s whose NDJSON did not end with the usage line (a failure after the status)."""
    out = {"streams": 0, "failed": 0, "examples": []}
    for case, res in zip(cases, results, strict=True):
        if not case.endpoint.endswith("aggregator.stream") or res["status"] != 200:
            continue
        out["streams"] += 1
        if problem := stream_error(res.get("tail", "")):
            out["failed"] += 1
            if len(out["examples"]) < 5:
                body = case.body[:300].decode(errors="replace")
                out["examples"].append({"endpoint": case.endpoint, "kind": case.kind, "body": body, "error": problem})
    return out
