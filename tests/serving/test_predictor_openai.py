"""The chain in the OpenAI protocol (`--predictor_api openai`) against cmva's own predictors: the packed
predictor's chat-completions route (the adapter named by `model`, streamed or not), and a transformer asking it
in that protocol answering as the V1 chain does (greedy decoding, tiny smoke models), streams included."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import free_port
from tests.serving.stubs import VllmPaths, metric, spawn, stop, wait_http

VALUES = ["care", "fairness", "loyalty", "authority", "sanctity"]
QUESTION = "Should I lend my brother money?"


def _chat(url: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/openai/v1/chat/completions", json=body, timeout=120)


@pytest.fixture(scope="module")
def predictor(packed) -> str:
    return f"http://127.0.0.1:{packed.ports['packed']}"


@pytest.fixture
def openai_chain(packed, smoke_run, tmp_path):
    """start(agents, values, wait, *args): a transformer in the OpenAI protocol before the packed predictor → URL,
    once `/v2/health/<wait>` answers 200 ("ready": its predictors too)."""
    out, _, _ = smoke_run
    procs = []

    def start(agents: str, values: list[str], wait: str = "ready", *args: str) -> str:
        port = free_port()
        log = tmp_path / f"transformer-{port}.log"
        argv = [
            *("--model_name", "cmva", "--values", ",".join(values), "--http_port", str(port), "--host", "127.0.0.1"),
            *("--agents", agents, "--predictor_host", f"127.0.0.1:{packed.ports['packed']}"),
            *("--predictor_api", "openai", "--artifacts", str(out), "--agent_timeout_s", "60"),
            *args,
        ]
        procs.append(spawn(argv, log, role="transformer"))
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/v2/health/{wait}", procs[-1], log, timeout=180)
        return url

    yield start
    for p in procs:
        stop(p)


def test_predictor_chat_completion_is_the_v1_agent_answer(predictor):
    body = {"model": "care", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16}
    r = _chat(predictor, body)
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["object"] == "chat.completion" and c["model"] == "care"
    assert c["usage"]["completion_tokens"] > 0 and c["usage"]["prompt_tokens"] > 0
    v1 = httpx.post(
        f"{predictor}/v1/models/agents:predict",
        json={"instances": [{"question": QUESTION, "values": ["care"]}], "parameters": {"max_new_tokens": 16}},
        timeout=120,
    )
    assert c["choices"][0]["message"]["content"] == v1.json()["predictions"][0]["answers"]["care"]


@pytest.mark.parametrize(
    ("change", "status", "param"),
    [
        ({"model": "kindness"}, 404, "model"),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages"),
        ({"max_tokens": 0}, 400, "max_tokens"),
        ({"max_tokens": 100_000}, 400, "max_tokens"),
        ({"temperature": 0.7}, 400, "temperature"),
        ({"stream": "yes"}, 400, "stream"),
        ({"stream": True, "stream_options": ["include_usage"]}, 400, "stream_options"),
    ],
)
def test_predictor_chat_bad_input_names_the_field(predictor, change, status, param):
    body = {"model": "aggregator", "messages": [{"role": "user", "content": QUESTION}], **change}
    r = _chat(predictor, body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


def test_chain_in_openai_protocol_answers_as_in_v1(packed, predictor, openai_chain, smoke_run):
    """The same greedy answers, the aggregator's included: the transformer ranks the answers as the aggregator
    predictor does in V1 (its ranking.json), which here is not the order by weight."""
    from cmva.ranking import AnswerRanker

    url = openai_chain(f"packed={predictor}", VALUES)
    profile = {"care": 0.25, "fairness": 1.0, "loyalty": 0.5, "authority": 0.75}
    body = {"instances": [{"question": QUESTION, "profile": profile}], "parameters": {"max_new_tokens": 16}}
    v1 = httpx.post(f"{packed.url}/v1/models/cmva:predict", json=body, timeout=300)
    chat = httpx.post(f"{url}/v1/models/cmva:predict", json=body, timeout=300)
    assert v1.status_code == 200 and chat.status_code == 200, chat.text
    a, b = v1.json()["predictions"][0], chat.json()["predictions"][0]
    assert b["answer"] == a["answer"]
    assert {v: x["answer"] for v, x in b["agents"].items()} == {v: x["answer"] for v, x in a["agents"].items()}
    assert b["skipped"] == ["sanctity"] and b["degraded"] is False
    out, _, _ = smoke_run
    full, answers = {v: profile.get(v, 0.0) for v in VALUES}, {v: x["answer"] for v, x in a["agents"].items()}
    order = AnswerRanker.load(out / "aggregator", out / "rewards").order([full], [answers])[0]
    assert order != sorted(answers, key=lambda v: -full[v])  # so the equality above needs the ranking applied


def test_chain_asks_vllms_own_server_on_its_paths(packed, predictor, openai_chain):
    """`--openai_server vllm`: agents and aggregator asked on `/v1/chat/completions`, readiness read from `/health`
    (200 with an empty body), as vLLM's own server answers them; the answers, which come with vLLM's leading space,
    are the V1 chain's (stripped: the aggregator reads the agents' answers as from cmva's predictors)."""
    proxy = VllmPaths(free_port(), predictor).start()
    try:
        url = openai_chain(
            f"packed={proxy.url}",
            VALUES,
            "ready",
            "--openai_server",
            "vllm",
            "--predictor_host",
            f"127.0.0.1:{proxy.port}",
        )
        profile = {"care": 1.0, "loyalty": 0.5}
        body = {"instances": [{"question": QUESTION, "profile": profile}], "parameters": {"max_new_tokens": 8}}
        v1 = httpx.post(f"{packed.url}/v1/models/cmva:predict", json=body, timeout=300)
        chat = httpx.post(f"{url}/v1/models/cmva:predict", json=body, timeout=300)
        assert v1.status_code == 200 and chat.status_code == 200, chat.text
        a, b = v1.json()["predictions"][0], chat.json()["predictions"][0]
        assert b["answer"] == a["answer"] and b["degraded"] is False
        assert {v: x["answer"] for v, x in b["agents"].items()} == {v: x["answer"] for v, x in a["agents"].items()}
        assert proxy.requests["/v1/chat/completions"] == 3  # two agents and the aggregator
        assert proxy.requests["/health"] >= 1 and set(proxy.requests) == {"/health", "/v1/chat/completions"}
        client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key="unused", max_retries=0)
        kw = {"model": "cmva", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 256}
        whole = client.chat.completions.create(**kw, extra_body={"profile": profile})
        _, texts = _streamed(client, **kw, extra_body={"profile": profile})
        assert "".join(texts) == whole.choices[0].message.content != "" and not texts[0].startswith(" ")
        proxy.healthy = False
        time.sleep(1.5)  # the transformer's probe caches readiness for a second
        assert httpx.get(f"{url}/v2/health/ready", timeout=30).status_code == 503
    finally:
        proxy.stop()


def _streamed(client: openai.OpenAI, **kw) -> tuple[list, list[str]]:
    """The chunks of a streamed completion (with its usage chunk) and their text deltas."""
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    return chunks, [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


def test_predictor_streams_a_chat_completion(predictor):
    """The real openai client against the predictor, as the transformer (or any client) asks vLLM: the deltas add
    up to the non-streamed answer, the usage comes last, no `cmva` field (that is the transformer's)."""
    client = openai.OpenAI(base_url=f"{predictor}/openai/v1", api_key="unused", max_retries=0)
    # 256 tokens: the smoke models' first ~100 are newlines (stripped), their visible text comes after them.
    kw = {"model": "care", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 256}
    whole = client.chat.completions.create(**kw)
    chunks, texts = _streamed(client, **kw)
    assert "".join(texts) == whole.choices[0].message.content != ""
    assert len(texts) > 1 and chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert "cmva" not in (chunks[0].model_extra or {})


def test_chain_in_openai_protocol_streams_the_aggregators_answer(predictor, openai_chain):
    """The transformer streams the aggregator predictor's chat-completions stream on, delta by delta (it used to
    wait for the whole answer and send it as one event): as the V1 chain streams its `:stream` route."""
    url = openai_chain(f"packed={predictor}", VALUES)
    client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key="unused", max_retries=0)
    profile = {"profile": {"care": 1.0, "fairness": 0.5}}
    kw = {"model": "cmva", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 256}
    whole = client.chat.completions.create(**kw, extra_body=profile)
    chunks, texts = _streamed(client, **kw, extra_body=profile)
    assert "".join(texts) == whole.choices[0].message.content != ""
    assert len(texts) > 1  # the aggregator's tokens as they came, not one event at the end
    assert chunks[0].model_extra["cmva"] == whole.model_extra["cmva"]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_chain_in_openai_protocol_client_leaving_a_stream_stops_the_aggregator(predictor, openai_chain):
    """The client closes its stream after the first chunk: the transformer closes its chat-completions stream to
    the predictor, whose generation stops (never counted as generated tokens) instead of running to max_tokens."""
    url = openai_chain(f"packed={predictor}", VALUES)
    client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key="unused", max_retries=0)
    kw = {
        "model": "cmva",
        "messages": [{"role": "user", "content": QUESTION}],
        "extra_body": {"profile": {"care": 1.0}},
    }
    before = metric(predictor, "cmva_generated_tokens_total", {"adapter": "aggregator"})
    stream = client.chat.completions.create(**kw, max_tokens=384, stream=True)
    next(stream)  # sent once the aggregator's stream has started
    stream.close()
    client.chat.completions.create(**kw, max_tokens=1)  # queued after it
    added = metric(predictor, "cmva_generated_tokens_total", {"adapter": "aggregator"}) - before
    assert added <= 1  # this last answer's token at most; the 384-token stream run to its end: ~100 more


def test_chain_in_openai_protocol_degrades_without_an_agent(predictor, openai_chain):
    dead = f"http://127.0.0.1:{free_port()}"
    url = openai_chain(f"care={predictor},fairness={dead}", ["care", "fairness"], wait="live")
    body = {"instances": [{"question": QUESTION, "profile": {"care": 1.0, "fairness": 1.0}}]}
    r = httpx.post(f"{url}/v1/models/cmva:predict", json=body, timeout=300)
    assert r.status_code == 200, r.text
    pred = r.json()["predictions"][0]
    assert pred["degraded"] is True and pred["missing"] == ["fairness"] and set(pred["agents"]) == {"care"}


def test_chain_in_openai_protocol_aggregator_refusal_is_502(predictor, openai_chain):
    """An adapter the aggregator's server does not have (its 404 naming `model`): 502 naming the aggregator."""
    url = openai_chain(f"packed={predictor}", VALUES, "ready", "--aggregator_adapter", "no-such-adapter")
    body = {"instances": [{"question": QUESTION, "profile": {"care": 1.0}}], "parameters": {"max_new_tokens": 8}}
    r = httpx.post(f"{url}/v1/models/cmva:predict", json=body, timeout=300)
    assert r.status_code == 502, r.text
    assert "aggregator predictor refused the request with 404" in r.json()["error"] and "model" in r.json()["error"]


@pytest.mark.parametrize("body", [b"{not json", b"[" * 100_000 + b"]" * 100_000])
def test_both_chat_routes_refuse_a_body_that_is_not_json(packed, predictor, body):
    for url in (packed.url, predictor):  # the transformer's client route, the predictor's
        r = httpx.post(f"{url}/openai/v1/chat/completions", content=body, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["message"].startswith("body: not valid JSON"), r.text
