"""The serving chain as real KServe servers on loopback: V1, V2, OpenAI route, 4xx naming the field,
a killed agent giving a degraded answer (both topologies, tiny model)."""

from __future__ import annotations

import json

import httpx
import pytest

from cmva.serving.launcher import free_port_block, start_chain

VALUES = ["care", "fairness", "loyalty", "authority", "sanctity"]


def _predict(url, body, timeout=120):
    return httpx.post(f"{url}/v1/models/cmva:predict", json=body, timeout=timeout)


def test_v1_predict_contract(packed):
    r = _predict(
        packed.url,
        {"instances": [{"question": "Should I lend my brother money?", "profile": {"care": 1.0, "loyalty": 0.5}}]},
    )
    assert r.status_code == 200, r.text
    pred = r.json()["predictions"][0]
    assert set(pred) == {"answer", "agents", "skipped", "missing", "degraded"}
    assert set(pred["agents"]) == {"care", "loyalty"}
    assert set(pred["skipped"]) == {"fairness", "authority", "sanctity"}
    assert pred["degraded"] is False and pred["missing"] == []
    for a in pred["agents"].values():
        assert isinstance(a["answer"], str) and set(a["scores"]) == set(VALUES)
        assert all(0 <= s <= 1 for s in a["scores"].values())


@pytest.mark.parametrize(
    "body, field",
    [
        ({"instances": [{"question": "q?", "profile": {"honour": 1.0}}]}, "instances.0.profile"),
        ({"instances": [{"question": "q?", "profile": {"care": 2.0}}]}, "instances.0.profile"),
        ({"instances": [{"question": "q?", "profile": {"care": "high"}}]}, "instances.0.profile"),
        ({"instances": [{"question": "   ", "profile": {"care": 1.0}}]}, "instances.0.question"),
        ({"instances": [{"question": "x" * 2001, "profile": {"care": 1.0}}]}, "instances.0.question"),
        ({"instances": [{"question": "q?", "profile": {"care": 1.0}}] * 17}, "instances"),
        ({"instances": []}, "instances"),
        ({"instances": [{"profile": {"care": 1.0}}]}, "instances.0.question"),
        (
            {"instances": [{"question": "q?", "profile": {"care": 1}}], "parameters": {"max_new_tokens": 0}},
            "parameters.max_new_tokens",
        ),
        (
            {
                "instances": [{"question": "q?", "profile": {"care": 1}}],
                "parameters": {"max_new_tokens": 4, "min_new_tokens": 8},
            },
            "min_new_tokens",
        ),
    ],
)
def test_bad_requests_get_400_naming_the_field(packed, body, field):
    r = _predict(packed.url, body)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]


def test_v2_infer(packed):
    body = {
        "inputs": [
            {
                "name": "question",
                "shape": [1],
                "datatype": "BYTES",
                "data": ["Is it fine to skip my cousin's wedding?"],
            },
            {"name": "profile", "shape": [1], "datatype": "BYTES", "data": [json.dumps({"loyalty": 1.0})]},
        ]
    }
    r = httpx.post(f"{packed.url}/v2/models/cmva/infer", json=body, timeout=120)
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert set(outs) == {"answer", "details"}
    assert json.loads(outs["details"]["data"][0])["skipped"] == ["care", "fairness", "authority", "sanctity"]
    bad = httpx.post(f"{packed.url}/v2/models/cmva/infer", json={"inputs": [body["inputs"][0]]}, timeout=60)
    assert bad.status_code == 400 and "profile" in bad.text


def test_openai_client_against_the_chain(packed):
    import openai

    client = openai.OpenAI(base_url=f"{packed.url}/openai/v1", api_key="unused")
    resp = client.chat.completions.create(
        model="cmva",
        messages=[{"role": "user", "content": "My neighbour's dog barks all night. What should I do?"}],
        max_tokens=8,
        extra_body={"profile": {"care": 1.0, "authority": 0.5}},
    )
    assert resp.choices[0].message.role == "assistant"
    assert isinstance(resp.choices[0].message.content, str)
    with pytest.raises(openai.BadRequestError, match="profile"):
        client.chat.completions.create(
            model="cmva", messages=[{"role": "user", "content": "hi"}], extra_body={"profile": {"greed": 1}}
        )


@pytest.mark.parametrize(
    "content, field",
    [
        ('{"model": "cmva", "messages": -1, "profile": {"care": 1}}', "messages"),  # found by bench/reliability
        ("[" * 100_000, "body"),  # nested deeper than the JSON decoder allows: was a 500
    ],
)
def test_openai_route_bad_bodies_get_400(packed, content, field):
    r = httpx.post(
        f"{packed.url}/openai/v1/chat/completions",
        content=content,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith(field)


@pytest.mark.parametrize(
    "path, content, field",
    [
        (
            "/v1/models/cmva:predict",
            '{"instances": [{"question": "q?", "profile": {"care": 1, "loyalty": -Infinity}}]}',
            "instances.0.profile.loyalty",
        ),  # found by bench/reliability: was "Unrecognized request format: … line 1 column 62"
        ("/v1/models/cmva:predict", '{"instances": [{"question": "q?", "profile": {"care": NaN}}]}', "care"),
        (
            "/v2/models/cmva/infer",
            '{"inputs": [{"name": "question", "shape": [1], "datatype": "FP32", "data": [Infinity]}]}',
            "inputs.0.data.0",
        ),
    ],
)
def test_non_json_numbers_get_400_naming_the_field(packed, path, content, field):
    r = httpx.post(f"{packed.url}{path}", content=content, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]


def test_health_and_metrics(packed):
    assert httpx.get(f"{packed.url}/v2/health/ready", timeout=10).status_code == 200
    m = httpx.get(f"{packed.url}/metrics", timeout=10)
    assert m.status_code == 200 and "predict" in m.text  # KServe's Prometheus histograms


def test_separate_topology_degrades_when_an_agent_dies(smoke_run, tmp_path):
    out, _, _ = smoke_run
    with start_chain(str(out), "separate", free_port_block(8), log_dir=tmp_path, agent_timeout_s=30) as chain:
        body = {"instances": [{"question": "Can I read my sister's diary?", "profile": {"care": 1.0, "fairness": 1.0}}]}
        ok = _predict(chain.url, body)
        assert ok.status_code == 200 and ok.json()["predictions"][0]["degraded"] is False
        chain.processes["fairness"].kill()
        chain.processes["fairness"].wait()
        r = _predict(chain.url, body)
        assert r.status_code == 200, r.text
        pred = r.json()["predictions"][0]
        assert pred["degraded"] is True and pred["missing"] == ["fairness"]
        assert set(pred["agents"]) == {"care"}


def test_served_aggregator_reads_the_answers_in_its_ranking_order(packed, smoke_run):
    """The aggregator predictor ranks the agents' answers as its training data did (`ranking.json`, second
    reward set): its answer equals the offline engine's on the ranked prompt, greedy decoding."""
    from cmva.aggregator import cmva_answers
    from cmva.engine import Engine
    from cmva.ranking import AnswerRanker

    out, _, _ = smoke_run
    ranker = AnswerRanker.load(out / "aggregator", out / "rewards")
    assert ranker is not None and set(ranker.mean) == set(VALUES)
    inst = {
        "question": "Should I tell my friend a hard truth?",
        "profile": {"care": 0.25, "fairness": 1.0, "loyalty": 0.5, "authority": 0.75, "sanctity": 0.25},
        "answers": {v: f"As {v} asks: be honest and kind, it is {v}." for v in VALUES},
    }
    url = f"http://127.0.0.1:{packed.ports['packed']}/v1/models/cmva:predict"
    r = httpx.post(url, json={"instances": [inst], "parameters": {"max_new_tokens": 12}}, timeout=120)
    assert r.status_code == 200, r.text
    engine = Engine(out / "base", {"aggregator": out / "aggregator"})
    offline = cmva_answers(
        engine, [inst["question"]], [inst["profile"]], [inst["answers"]], 12, batch_size=1, ranker=ranker
    )
    assert r.json()["predictions"][0]["answer"] == offline[0]
    order = ranker.order([inst["profile"]], [inst["answers"]])[0]
    by_weight = sorted(VALUES, key=lambda v: -inst["profile"][v])
    assert order != by_weight  # so the equality above tells the ranked prompt from the weight-ordered one


@pytest.mark.parametrize("dtype", ["bfloat16", "float16-weights", "float32", None])
def test_chain_serves_with_a_backend_in_the_dtype_asked(dtype, smoke_run, tmp_path, request):
    """`--dtype` reaches the predictor, whose backend loads its base model so on this CPU too (bfloat16 where the CPU
    has native bf16; float16-weights: linear layers packed, cmva.cpu_linear), and the packed chain answers with every
    agent. Without `--dtype` (None) the predictor generates in the base's own dtype, the one the run was evaluated in
    (the smoke recipe's `base.cpu_dtype`: float16-weights). (The smoke model's greedy answers are blank lines, so
    answers cannot tell the dtypes apart here; tests/unit/test_engine.py compares logits.)"""
    import torch

    from cmva.cpu_linear import Float16WeightLinear
    from cmva.serving.predictors import SharedBackend

    if dtype == "bfloat16":
        request.getfixturevalue("native_bf16")
    out, _, _ = smoke_run
    backend = SharedBackend(str(out), [*VALUES, "aggregator"], dtype=dtype)
    backend.load()
    model = backend.engine.model
    if dtype == "bfloat16":
        assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    elif dtype == "float32":
        assert type(model.get_output_embeddings()) is torch.nn.Linear
    else:
        assert isinstance(model.get_output_embeddings(), Float16WeightLinear)
    assert backend.engine.dtype == (dtype or "float16-weights")
    with start_chain(str(out), "packed", free_port_block(3), log_dir=tmp_path, dtype=dtype) as chain:
        argv = _cmdline(chain.processes["packed"].pid)
        assert argv[argv.index("--dtype") + 1] == dtype if dtype else "--dtype" not in argv
        body = {
            "instances": [{"question": "Is it fair to keep a found wallet?", "profile": dict.fromkeys(VALUES, 1.0)}]
        }
        r = _predict(chain.url, body)
        assert r.status_code == 200, r.text
        assert set(r.json()["predictions"][0]["agents"]) == set(VALUES)


def _cmdline(pid: int) -> list[str]:
    import psutil

    return psutil.Process(pid).cmdline()


def test_predictor_refuses_an_unknown_dtype(capsys):
    from cmva.serving.servers import main_agent

    with pytest.raises(SystemExit) as e:
        main_agent(["--artifacts", "/nonexistent", "--dtype", "int8"])
    assert e.value.code == 2 and "--dtype" in capsys.readouterr().err
