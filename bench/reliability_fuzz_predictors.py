"""Schema fuzzing of the predictors, in both topologies (bench/reliability, part a).

The transformer's cases (bench.reliability_fuzz) plus cases for the agent and the aggregator predictors:
V1 bodies (validated by cmva.serving.schemas, one mutation whose offending field is known) and V2 bodies
(predictors take V1 only: every V2 body must be a 4xx naming the body or the field), and bodies nested
100 000 deep for every endpoint. Each case is routed to a server of a packed or a separate chain and
labelled `<topology>/<target>.<protocol>`, e.g. `separate/agent.v1`.

Predictor bodies use finite numbers only, except the `non_finite` kind (NaN / ±Infinity, which Python's
`json.dumps` writes), so that a 4xx naming a position instead of the field shows up under that kind alone.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace

from hypothesis import strategies as st

from bench.reliability_fuzz import (
    PATHS,
    VALUES,
    Case,
    _body_level,
    _draw,
    _enc,
    _set,
    bad_weight,
    body_mutations,
    generate_cases,
    key,
    profile,
    question,
    unknown_value,
    v2_case,
)
from cmva.serving.schemas import MAX_INSTANCES

DEEP = 100_000  # nesting depth of the `deep` cases (a 200 kB body, under the 1 MB limit)
DEEP_PATHS = (("depth",), ("nested",), ("request format",), ("body",))
FIELDS = {"question", "values", "profile", "answers", "instances", "parameters", "max_new_tokens", "min_new_tokens"}
NON_FINITE = [float("nan"), float("inf"), float("-inf")]

finite_wrong_type = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=3),
    st.just({"a": 1}),
)
finite_bad_weight = bad_weight.filter(lambda w: not (isinstance(w, float) and not math.isfinite(w)))
answer_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)


def _not(*types):
    return finite_wrong_type.filter(lambda x: not isinstance(x, types))


def _shared(draw, body: dict, kind: str, i: int) -> tuple[tuple, ...]:
    """Apply a mutation both predictors' bodies have (question, instances, parameters, extra fields);
    the offending field's paths."""
    p = ("instances", i)
    if kind.endswith(".extra"):
        where = {"instance.extra": p, "parameters.extra": ("parameters",), "top.extra": ()}[kind]
        k = draw(key.filter(lambda k: k not in FIELDS))
        _set(body, where + (k,), draw(finite_wrong_type))
        return (where + (k,),)
    path, value = body_mutations(body, p, finite_wrong_type, _not)[kind]
    _set(body, path, draw(value))
    return (path,)


SHARED_KINDS = [
    "question.missing", "question.type", "question.bad", "instance.extra", "instance.type", "instances.missing",
    "instances.empty", "instances.type", "instances.too_many", "parameters.type", "parameters.max_new_tokens",
    "parameters.scores", "parameters.min_new_tokens", "parameters.extra", "top.extra",
]  # fmt: skip
AGENT_KINDS = ["valid", "values.unknown", "values.type", "values.empty", "values.item_type", "non_finite"]
AGGREGATOR_KINDS = [
    "valid", "profile.unknown_value", "profile.weight", "profile.weight", "profile.missing", "profile.type",
    "profile.all_zero", "answers.unknown_value", "answers.type", "answers.item_type", "non_finite",
]  # fmt: skip


@st.composite
def agent_case(draw, served: tuple[str, ...]) -> Case:
    """An agent predictor V1 body: {"instances": [{"question", "values"?}], "parameters"}."""
    if (c := _body_level(draw, "agent.v1")) is not None:
        return c
    n = draw(st.integers(1, 3))
    instances = []
    for _ in range(n):
        inst = {"question": draw(question)}
        if draw(st.booleans()):
            inst["values"] = draw(st.lists(st.sampled_from(served), min_size=1, max_size=len(served), unique=True))
        instances.append(inst)
    body = {"instances": instances, "parameters": {"max_new_tokens": 4, "scores": draw(st.booleans())}}
    i = draw(st.integers(0, n - 1))
    p = ("instances", i)
    # Over the work budget (instances × values × tokens) only where one predictor serves several values.
    kind = draw(st.sampled_from(AGENT_KINDS + SHARED_KINDS + (["budget"] if len(served) >= 3 else [])))
    expect, paths = "error", None
    if kind == "valid":
        expect, paths = "ok", ()
    elif kind == "values.unknown":
        others = [v for v in VALUES if v not in served]
        k = draw(unknown_value | st.sampled_from(others)) if others else draw(unknown_value)
        body["instances"][i]["values"] = [k]
        paths = (p + ("values",),)
    elif kind in ("values.type", "values.empty", "values.item_type"):
        value = {
            "values.type": _not(list, type(None)) | st.text(max_size=5),
            "values.empty": st.just([]),
            "values.item_type": _not(str).map(lambda x: [x]),
        }[kind]
        body["instances"][i]["values"] = draw(value)
        paths = (p + ("values",),)
    elif kind == "non_finite":
        path = draw(st.sampled_from([("parameters", "max_new_tokens"), ("parameters", "min_new_tokens")]))
        _set(body, path, draw(st.sampled_from(NON_FINITE)))
        paths = (path,)
    elif kind == "budget":
        body["instances"] = [{"question": draw(question)}] * MAX_INSTANCES
        body["parameters"]["max_new_tokens"] = 512
        paths = (("parameters", "max_new_tokens"),)
    else:
        paths = _shared(draw, body, kind, i)
    return Case("agent.v1", kind, _enc(body), paths, expect)


@st.composite
def aggregator_case(draw) -> Case:
    """An aggregator predictor V1 body: {"instances": [{"question", "profile", "answers"}], "parameters"}."""
    if (c := _body_level(draw, "aggregator.v1")) is not None:
        return c
    n = draw(st.integers(1, 3))
    instances = []
    for _ in range(n):
        prof = draw(profile)
        answered = draw(st.lists(st.sampled_from(sorted(prof)), unique=True))
        instances.append(
            {"question": draw(question), "profile": prof, "answers": {v: draw(answer_text) for v in answered}}
        )
    body = {"instances": instances, "parameters": {"max_new_tokens": 4}}
    i = draw(st.integers(0, n - 1))
    p = ("instances", i)
    kind = draw(st.sampled_from(AGGREGATOR_KINDS + SHARED_KINDS))
    inst = body["instances"][i]
    expect, paths = "error", None
    if kind == "valid":
        expect, paths = "ok", ()
    elif kind == "profile.all_zero":  # the aggregator takes the profile as the transformer sent it
        expect, paths = "either", (p + ("profile",),)
        inst["profile"] = dict.fromkeys(draw(st.lists(st.sampled_from(VALUES), min_size=1)), 0.0)
    elif kind == "profile.unknown_value":
        k = draw(unknown_value)
        inst["profile"][k] = 0.5
        paths = (p + ("profile", k),)
    elif kind in ("profile.weight", "non_finite"):
        v = draw(st.sampled_from(VALUES))
        inst["profile"][v] = draw(finite_bad_weight if kind == "profile.weight" else st.sampled_from(NON_FINITE))
        paths = (p + ("profile", v),)
    elif kind == "profile.missing":
        del inst["profile"]
        paths = (p + ("profile",),)
    elif kind == "profile.type":
        inst["profile"] = draw(_not(dict))
        paths = (p + ("profile",),)
    elif kind == "answers.unknown_value":
        k = draw(unknown_value)
        inst["answers"][k] = draw(answer_text)
        paths = (p + ("answers", k),)
    elif kind == "answers.type":
        inst["answers"] = draw(_not(dict))
        paths = (p + ("answers",),)
    elif kind == "answers.item_type":
        v = draw(st.sampled_from(VALUES))
        inst["answers"][v] = draw(_not(str))
        paths = (p + ("answers", v),)
    else:
        paths = _shared(draw, body, kind, i)
    return Case("aggregator.v1", kind, _enc(body), paths, expect)


def deep_cases() -> list[Case]:
    """Bodies nested DEEP levels: in a V1 field, in the V2 envelope, in a V2 profile string, on the OpenAI route."""
    nest = "[" * DEEP + "]" * DEEP
    q = "Is it fair to keep a found wallet?"

    def nested(obj) -> bytes:  # "@" marks where the nesting goes
        return json.dumps(obj).replace('"@"', nest).encode()

    tensor = {"name": "question", "shape": [1], "datatype": "BYTES", "data": "@"}
    v2_profile = _enc({"inputs": [{**tensor, "data": [q]}, {**tensor, "name": "profile", "data": [nest]}]})
    profile_paths = DEEP_PATHS + (("profile",), ("inputs",))
    return [
        Case("v1", "deep", nested({"instances": [{"question": q, "profile": {"care": "@"}}]}), DEEP_PATHS),
        Case("v2", "deep.envelope", nested({"inputs": [tensor]}), DEEP_PATHS + (("inputs",),)),
        Case("v2", "deep.profile_string", v2_profile, profile_paths),
        Case("openai", "deep", nested({"messages": [{"role": "user", "content": q}], "profile": "@"}), DEEP_PATHS),
        Case("agent.v1", "deep", nested({"instances": [{"question": q, "values": "@"}]}), DEEP_PATHS),
        Case("agent.v2", "deep.envelope", nested({"inputs": [tensor]}), DEEP_PATHS + (("instances",),)),
        Case(
            "aggregator.v1",
            "deep",
            nested({"instances": [{"question": q, "profile": {"care": 1.0}, "answers": "@"}]}),
            DEEP_PATHS,
        ),
        Case("aggregator.v2", "deep.profile_string", v2_profile, profile_paths + (("instances",),)),
    ]


def predictor_targets(topology: str, values: list[str], model: str = "cmva") -> dict[str, list[tuple[str, str]]]:
    """{"agent": [(server, model name), …], "aggregator": [(server, model name)]} of a chain's predictors."""
    if topology == "packed":
        return {"agent": [("packed", "agents")], "aggregator": [("packed", model)]}
    return {"agent": [(v, v) for v in values], "aggregator": [("aggregator", model)]}


def _route(case: Case, topology: str, target: str, server: str, model: str) -> Case:
    proto = case.endpoint.rsplit(".", 1)[-1] if "." in case.endpoint else case.endpoint
    path = f"/v1/models/{model}:predict" if proto == "v1" else f"/v2/models/{model}/infer"
    return replace(case, endpoint=f"{topology}/{target}.{proto}", server=server, route=path)


def _as_predictor_v2(case: Case) -> Case:
    """A transformer V2 case sent to a predictor (V1 only): always an error, naming the body or the field."""
    return replace(case, expect="error", paths=case.paths + (("body",), ("instances",)))


def topology_cases(n: int, topology: str, values: list[str], model: str = "cmva") -> list[Case]:
    """About `n` cases for one chain: half to the transformer (V1, V2, OpenAI), half to its predictors
    (40 % agent V1, 40 % aggregator V1, 20 % V2), plus the `deep` cases, plus n/10 to the predictors' stream
    and chat routes (bench.reliability_fuzz_routes); interleaved."""
    targets = predictor_targets(topology, values, model)
    transformer = [
        replace(c, endpoint=f"{topology}/{c.endpoint}", route=PATHS[c.endpoint]) for c in generate_cases(n // 2)
    ]
    n_p = n - n // 2
    n_agent, n_agg = n_p * 2 // 5, n_p * 2 // 5
    agents, m = [], len(targets["agent"])
    for k, (server, name) in enumerate(targets["agent"]):
        count = n_agent // m + (k < n_agent % m)
        served = tuple(values) if topology == "packed" else (server,)
        agents.append([_route(c, topology, "agent", server, name) for c in _draw(agent_case(served), count)])
    agents_v1 = [c for group in itertools.zip_longest(*agents) for c in group if c is not None]
    server, name = targets["aggregator"][0]
    aggregator_v1 = [_route(c, topology, "aggregator", server, name) for c in _draw(aggregator_case(), n_agg)]
    v2 = []
    for k, c in enumerate(_draw(v2_case(), n_p - n_agent - n_agg)):
        target = "agent" if k % 2 == 0 else "aggregator"
        server, name = targets[target][(k // 2) % len(targets[target])]
        v2.append(_route(_as_predictor_v2(c), topology, target, server, name))
    deep = []
    for c in deep_cases():
        target, _, proto = c.endpoint.rpartition(".")
        if target:  # a predictor's
            server, name = targets[target][0]
            deep.append(_route(c, topology, target, server, name))
        else:
            deep.append(replace(c, endpoint=f"{topology}/{c.endpoint}", route=PATHS[c.endpoint]))
    from bench.reliability_fuzz_routes import route_cases  # the stream and chat routes (it imports this module)

    streams = [transformer, agents_v1, aggregator_v1, v2, deep, route_cases(n // 10, topology, values, model)]
    return [c for group in itertools.zip_longest(*streams) for c in group if c is not None]
