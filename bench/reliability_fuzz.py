"""Schema fuzzing of the transformer's three endpoints (bench/reliability, part a; the predictors' cases are
in bench.reliability_fuzz_predictors).

Every case is a valid request with at most one mutation whose offending field is known, so a 4xx can be
checked for naming it. Bodies are sent as raw bytes: NaN/Infinity go out as JSON text, and some bodies
are not JSON at all.
"""

from __future__ import annotations

import itertools
import json
import string
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cmva.serving.schemas import MAX_INSTANCES, MAX_QUESTION_CHARS

PATHS = {"v1": "/v1/models/cmva:predict", "v2": "/v2/models/cmva/infer", "openai": "/openai/v1/chat/completions"}
DELETE = object()


@dataclass(frozen=True)
class Case:
    endpoint: str  # v1 | v2 | openai
    kind: str  # the mutation, e.g. "profile.weight"
    body: bytes
    paths: tuple[tuple, ...] = ()  # the offending field (alternatives); a 4xx must name one of them
    expect: str = "error"  # ok | error | either (a 200 and a 4xx naming the field are both fine)
    server: str = "transformer"  # which server of the chain (its key in Chain.ports) gets it
    route: str = ""  # the path on that server (default: PATHS[endpoint])


def error_text(raw: bytes) -> str:
    """Every string of an error body, with each FastAPI `loc` list also joined as a dotted path."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
    parts: list[str] = []

    def walk(x):
        if isinstance(x, dict):
            loc = x.get("loc")
            if isinstance(loc, list):
                dotted = [str(p) for p in loc]
                parts.append(".".join(dotted))
                parts.append(".".join(dotted[1:] if dotted[:1] == ["body"] else dotted))
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif x is not None:
            parts.append(str(x))

    walk(doc)
    return " | ".join(parts)


def names_problem(text: str, paths) -> bool:
    """True when the error names the field: its dotted path, or its parent's path plus its own key.

    >>> names_problem("instances.0.profile: weight of 'care' must be …", [("instances", 0, "profile", "care")])
    True
    """
    for path in paths:
        parts = [str(p) for p in path]
        if ".".join(parts) in text:
            return True
        if len(parts) > 1 and ".".join(parts[:-1]) in text and parts[-1] in text:
            return True
    return False


def _set(obj, path, value) -> None:
    for key in path[:-1]:
        obj = obj[key]
    if value is DELETE:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


# --- value strategies -------------------------------------------------------------------------------
VALUES = ["care", "fairness", "loyalty", "authority", "sanctity"]
question = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=120).filter(str.strip)
weight = st.floats(0, 1)
profile = st.dictionaries(st.sampled_from(VALUES), weight, min_size=1).filter(lambda p: any(p.values()))
key = st.text(string.ascii_letters + string.digits + "_", min_size=2, max_size=12)
unknown_value = st.sampled_from(["honour", "Care", "liberty", "greed", "care "]) | key.filter(lambda k: k not in VALUES)
wrong_type = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.lists(st.integers(), max_size=3), st.just({"a": 1})
)


def _not(*types):
    """A value of the wrong JSON type: anything in `wrong_type` that is not one of `types`."""
    return wrong_type.filter(lambda x: not isinstance(x, types))


bad_weight = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e999, -0.5, 1.0000001, 2, 10**30]),
    st.floats(max_value=-1e-9, allow_infinity=False, allow_nan=False),
    st.floats(min_value=1.000001, allow_infinity=False, allow_nan=False),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
    st.lists(weight, max_size=2),
)
bad_question = st.one_of(
    st.sampled_from(["", " ", "\n\t  "]),
    st.integers(MAX_QUESTION_CHARS + 1, 200_000).map(lambda n: "x" * n),
)
bad_tokens = st.one_of(
    st.sampled_from([0, -1, 513, 10**12, 4.5, None, "abc", [], {}]), st.integers(max_value=0), st.integers(513)
)
not_json = st.one_of(
    st.binary(min_size=1, max_size=200).filter(lambda b: not _is_json(b)),
    st.sampled_from([b'{"instances": [', b"{'a': 1}", b"", b"[" * 5000 + b"]" * 5000, b'{"a": }', b"\xff\xfe"]),
)
json_non_object = st.one_of(st.lists(st.integers(), max_size=3), st.text(max_size=10), st.integers(), st.none())


def _is_json(b: bytes) -> bool:
    try:
        json.loads(b)
        return True
    except ValueError:
        return False


def _enc(obj) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def _body_level(draw, endpoint: str):
    """A body that is not a JSON object at all (or None: not this time)."""
    kind = draw(st.sampled_from(["", "", "", "", "", "", "", "", "not_json", "json_non_object"]))
    if kind == "not_json":
        return Case(endpoint, kind, draw(not_json), (("body",), ("JSON",), ("json",), ("request format",)))
    if kind == "json_non_object":
        return Case(endpoint, kind, _enc(draw(json_non_object)), (("body",), ("inputs",)))
    return None


def body_mutations(body: dict, p: tuple, wrong, not_) -> dict:
    """Mutations every V1 body has (question, instance, instances, parameters): kind → (path, strategy).

    `wrong` draws a value of a wrong type, `not_(*types)` one of a type other than those.
    """
    return {
        "question.missing": (p + ("question",), st.just(DELETE)),
        "question.type": (p + ("question",), wrong),
        "question.bad": (p + ("question",), bad_question),
        "instance.type": (p, not_(dict)),
        "instances.missing": (("instances",), st.just(DELETE)),
        "instances.empty": (("instances",), st.just([])),
        "instances.type": (("instances",), not_(list)),
        "instances.too_many": (
            ("instances",),
            st.integers(MAX_INSTANCES + 1, 64).map(lambda k: [body["instances"][0]] * k),
        ),
        "parameters.type": (("parameters",), not_(dict, type(None))),
        "parameters.max_new_tokens": (("parameters", "max_new_tokens"), bad_tokens),
        "parameters.scores": (("parameters", "scores"), st.sampled_from(["maybe", 2, -1, [], {}, None])),
        "parameters.min_new_tokens": (
            ("parameters", "min_new_tokens"),
            st.integers(5, 600) | bad_tokens.filter(lambda x: x != 0),
        ),
    }


@st.composite
def v1_case(draw) -> Case:
    if (c := _body_level(draw, "v1")) is not None:
        return c
    n = draw(st.integers(1, 3))
    body = {"instances": [{"question": draw(question), "profile": draw(profile)} for _ in range(n)]}
    body["parameters"] = {"max_new_tokens": 4}
    i = draw(st.integers(0, n - 1))
    p = ("instances", i)
    kind = draw(st.sampled_from(V1_KINDS))
    expect, paths = "error", None
    if kind == "valid":
        expect, paths = "ok", ()
    elif kind == "profile.all_zero":
        expect, paths = "either", (p + ("profile",),)
        body["instances"][i]["profile"] = dict.fromkeys(draw(st.lists(st.sampled_from(VALUES), min_size=1)), 0.0)
    elif kind == "profile.unknown_value":
        k = draw(unknown_value)
        body["instances"][i]["profile"][k] = draw(weight)
        paths = (p + ("profile", k),)
    elif kind == "profile.weight":
        v = draw(st.sampled_from(VALUES))
        body["instances"][i]["profile"][v] = draw(bad_weight)
        paths = (p + ("profile", v),)
    elif kind.endswith(".extra"):
        where = {"instance.extra": p, "parameters.extra": ("parameters",), "top.extra": ()}[kind]
        k = draw(key.filter(lambda k: k not in ("question", "profile", "max_new_tokens", "scores", "instances")))
        _set(body, where + (k,), draw(wrong_type))
        paths = (where + (k,),)
    else:
        path, value = {
            **body_mutations(body, p, wrong_type, _not),
            "profile.missing": (p + ("profile",), st.just(DELETE)),
            "profile.type": (p + ("profile",), _not(dict)),
        }[kind]
        _set(body, path, draw(value))
        paths = (path,)
    return Case("v1", kind, _enc(body), paths, expect)


V1_KINDS = [
    *["valid"] * 3,
    "profile.all_zero", "profile.unknown_value", "profile.weight", "profile.weight", "profile.missing", "profile.type",
    "question.missing", "question.type", "question.bad", "instance.extra", "instance.type", "instances.missing",
    "instances.empty", "instances.type", "instances.too_many", "parameters.type", "parameters.max_new_tokens",
    "parameters.scores", "parameters.min_new_tokens", "parameters.extra", "top.extra",
]  # fmt: skip


def _tensor(name, data, n=None):
    return {"name": name, "shape": [len(data) if n is None else n], "datatype": "BYTES", "data": data}


@st.composite
def v2_case(draw) -> Case:
    if (c := _body_level(draw, "v2")) is not None:
        return c
    n = draw(st.integers(1, 2))
    qs = [draw(question) for _ in range(n)]
    ps = [json.dumps(draw(profile)) for _ in range(n)]
    body = {"inputs": [_tensor("question", qs), _tensor("profile", ps)]}
    i = draw(st.integers(0, n - 1))
    kind = draw(st.sampled_from(V2_KINDS))
    expect, paths = "error", None
    if kind == "valid":
        expect, paths = "ok", ()
    elif kind in ("question.missing", "profile.missing"):
        body["inputs"] = [t for t in body["inputs"] if t["name"] != kind.split(".")[0]]
        paths = ((kind.split(".")[0],),)
    elif kind == "length_mismatch":
        body["inputs"][1] = _tensor("profile", ps + ps[:1])
        paths = (("inputs",), ("profile",))
    elif kind == "profile.not_json":
        ps[i] = draw(st.text(max_size=20).filter(lambda s: not _is_json(s.encode())))
        paths = (("inputs", "profile", i), ("profile",))
    elif kind == "profile.invalid":
        bad = {draw(st.sampled_from(VALUES)): draw(bad_weight)}
        ps[i] = draw(
            st.sampled_from([json.dumps(bad, allow_nan=True), json.dumps({draw(unknown_value): 1.0}), "[1]", "3"])
        )
        paths = (("profile",),)
    elif kind == "question.bad":
        qs[i] = draw(bad_question | _not(list, dict))
        paths = (("question",),)
    elif kind == "too_many":
        body["inputs"] = [_tensor("question", qs[:1] * 20), _tensor("profile", ps[:1] * 20)]
        paths = (("instances",), ("inputs",), ("question",))
    elif kind == "extra_tensor":
        body["inputs"].append(_tensor(draw(key), ["x"]))
        expect, paths = "either", (("inputs",),)
    elif kind in ("datatype", "shape", "data", "name"):
        value = {
            "datatype": st.sampled_from(["FP32", "INT64", "BOOL", "nope", ""]),
            "shape": st.sampled_from([[], [0], [-1], [99], [1, 1], "x"]),
            "data": _not(list) | st.just(DELETE),
            "name": _not(str) | st.just(DELETE),
        }[kind]
        _set(body, ("inputs", i % 2, kind), draw(value))
        expect, paths = "either", ((kind,), ("inputs", i % 2, kind), ("question",), ("profile",))
    else:
        path, value = {
            "inputs.missing": (("inputs",), st.just(DELETE)),
            "inputs.empty": (("inputs",), st.just([])),
            "inputs.type": (("inputs",), _not(list)),
            "top.extra": ((draw(key.filter(lambda k: k not in ("inputs", "id"))),), wrong_type),
        }[kind]
        _set(body, path, draw(value))
        expect, paths = ("either" if kind == "top.extra" else "error"), (path,)
    return Case("v2", kind, _enc(body), paths, expect)


V2_KINDS = [
    *["valid"] * 2,
    "question.missing", "profile.missing", "length_mismatch", "profile.not_json", "profile.invalid", "profile.invalid",
    "question.bad", "too_many", "extra_tensor", "datatype", "shape", "data", "name", "inputs.missing", "inputs.empty",
    "inputs.type", "top.extra",
]  # fmt: skip

MSG_PATHS = (("messages",), ("content",), ("question",))
TOKEN_PATHS = (("max_tokens",), ("max_new_tokens",))
NOT_USER = ["assistant", "system", "tool", "", 3]


@st.composite
def openai_case(draw) -> Case:
    if (c := _body_level(draw, "openai")) is not None:
        return c
    msgs = [{"role": "user", "content": draw(question)}]
    if draw(st.booleans()):
        msgs.insert(0, {"role": "system", "content": "Answer briefly."})
    body = {"model": "cmva", "messages": msgs, "profile": draw(profile), "max_tokens": 4}
    if draw(st.booleans()):
        del body["model"]
    kind = draw(st.sampled_from(OPENAI_KINDS))
    expect, paths = "error", None
    if kind == "valid":
        expect, paths = "ok", ()
    elif kind == "openai_extra":  # fields an OpenAI client may send: ignored or refused by name
        k = draw(st.sampled_from(["temperature", "top_p", "n", "user", "seed", "stop", "logprobs"]))
        body[k] = draw(wrong_type | st.floats(0, 2))
        expect, paths = "either", ((k,),)
    elif kind == "profile.unknown_value":
        k = draw(unknown_value)
        body["profile"][k] = 1.0
        paths = (("profile", k),)
    elif kind == "profile.weight":
        v = draw(st.sampled_from(VALUES))
        body["profile"][v] = draw(bad_weight)
        paths = (("profile", v),)
    else:
        path, value, paths = {
            "model": (("model",), st.text(max_size=10).filter(lambda s: s != "cmva") | _not(type(None)), None),
            "stream": (("stream",), st.sampled_from(["yes", 1, [True], {"on": True}]), None),  # true streams
            "messages.missing": (("messages",), st.just(DELETE), None),
            "messages.type": (("messages",), _not(list), None),
            "messages.empty": (("messages",), st.just([]), None),
            "messages.no_user": (("messages", -1, "role"), st.sampled_from(NOT_USER), MSG_PATHS),
            "messages.item_type": (("messages", -1), _not(dict), MSG_PATHS),
            "content.type": (("messages", -1, "content"), wrong_type, MSG_PATHS),
            "content.bad": (("messages", -1, "content"), bad_question, MSG_PATHS),
            "profile.missing": (("profile",), st.just(DELETE), None),
            "profile.type": (("profile",), _not(dict), None),
            "max_tokens": (("max_tokens",), bad_tokens.filter(lambda x: x is not None), TOKEN_PATHS),
        }[kind]  # fmt: skip
        _set(body, path, draw(value))
        paths = paths or (path,)
    return Case("openai", kind, _enc(body), paths, expect)


OPENAI_KINDS = [
    *["valid"] * 3,
    "openai_extra", "profile.unknown_value", "profile.weight", "profile.weight", "model", "stream", "messages.missing",
    "messages.type", "messages.empty", "messages.no_user", "messages.item_type", "content.type", "content.bad",
    "profile.missing", "profile.type", "max_tokens",
]  # fmt: skip


def _draw(strategy, n: int) -> list[Case]:
    """`n` examples of a strategy, derandomized (the same cases every run), no shrinking."""
    out: list[Case] = []

    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(case):
        out.append(case)

    collect()
    return out


def generate_cases(n: int) -> list[Case]:
    """`n` cases, a third per endpoint, interleaved."""
    per_endpoint = [_draw(s, n // 3 + (k < n % 3)) for k, s in enumerate((v1_case(), v2_case(), openai_case()))]
    return [c for trio in itertools.zip_longest(*per_endpoint) for c in trio if c is not None]


def send(client: httpx.Client, url: str | dict[str, str], case: Case) -> dict:
    """POST one case to `url` (or `url[case.server]`); status, error text and whether it is a finding."""
    base = url[case.server] if isinstance(url, dict) else url
    try:
        path = case.route or PATHS[case.endpoint]
        r = client.post(base + path, content=case.body, headers={"content-type": "application/json"})
    except httpx.HTTPError as e:
        return {"status": None, "text": f"{type(e).__name__}: {e}", "transport_error": True}
    text = error_text(r.content) if r.status_code >= 400 else ""
    return {"status": r.status_code, "text": text, "transport_error": False, "raw": r.text[:400], "tail": r.text[-300:]}


def send_all(
    url: str | dict[str, str], cases: list[Case], workers: int = 4, timeout_s: float = 120.0, progress=None
) -> list[dict]:
    """Send every case (`url`: one base URL, or one per server); one result per case, in order."""
    timeout = httpx.Timeout(timeout_s, connect=5.0)
    with httpx.Client(timeout=timeout) as client, ThreadPoolExecutor(workers) as pool:
        results = []
        for res in pool.map(lambda c: send(client, url, c), cases):
            results.append(res)
            if progress is not None:
                progress.update(1)
    for case, res in zip(cases, results, strict=True):
        if res["transport_error"]:  # diagnosis only (still counted): the same request on a fresh connection
            with httpx.Client(timeout=timeout) as fresh:
                res["fresh_retry"] = send(fresh, url, case)["status"]
    return results


def run_fuzz(
    url: str | dict[str, str], cases: list[Case], workers: int = 4, timeout_s: float = 120.0, progress=None
) -> dict:
    """Send every case; counts and the first examples of every kind of finding."""
    return summarize(cases, send_all(url, cases, workers, timeout_s, progress))


def summarize(cases: list[Case], results: list[dict]) -> dict:
    out = {"total": len(cases), "by_endpoint": {}, "status": {}, "5xx": 0, "4xx": 0, "4xx_unnamed": 0}
    out |= {"transport_errors": 0, "valid_rejected": 0, "malformed_accepted": 0, "ok": 0}
    examples: dict[str, list] = {"5xx": [], "4xx_unnamed": [], "transport_errors": [], "valid_rejected": []}
    accepted = {}
    for case, res in zip(cases, results, strict=True):
        out["by_endpoint"][case.endpoint] = out["by_endpoint"].get(case.endpoint, 0) + 1
        s = res["status"]
        out["status"][str(s)] = out["status"].get(str(s), 0) + 1
        found = None
        if res["transport_error"]:
            found = "transport_errors"
        elif s >= 500:
            found = "5xx"
        elif s >= 400:
            out["4xx"] += 1
            if case.expect == "ok":
                found = "valid_rejected"
            elif not names_problem(res["text"], case.paths):
                found = "4xx_unnamed"
        else:
            out["ok"] += 1
            if case.expect == "error":
                out["malformed_accepted"] += 1
                accepted[f"{case.endpoint}:{case.kind}"] = accepted.get(f"{case.endpoint}:{case.kind}", 0) + 1
        if found:
            out[found] += 1
            body = case.body[:300].decode(errors="replace")
            if len(examples[found]) < 8 and all(e["body"] != body for e in examples[found]):
                examples[found].append(
                    {"endpoint": case.endpoint, "kind": case.kind, "status": s, "body": body,
                     "expected_field": [".".join(map(str, p)) for p in case.paths], "error": res["text"][:400],
                     "fresh_retry": res.get("fresh_retry")}
                )  # fmt: skip
    out["kinds"] = sorted({f"{c.endpoint}:{c.kind}" for c in cases})
    out["malformed_accepted_by_kind"] = accepted
    out["examples"] = examples
    return out
