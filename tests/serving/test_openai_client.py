"""Issue 16, what clients feel: the real `openai` client against the chain over HTTP. A streamed answer
(the aggregator's tokens as generated) adds up to the non-streamed one (greedy), usage counts, the model
list; bad requests get 400 naming the field before any stream; a stream broken midway ends with an error."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.serving.conftest import start_stub_transformer
from tests.serving.stubs import metric, stop

QUESTION = [{"role": "user", "content": "My neighbour's dog barks all night. What should I do?"}]
PROFILE = {"profile": {"care": 1.0, "authority": 0.5}}


@pytest.fixture(scope="module")
def client(packed):
    return openai.OpenAI(base_url=f"{packed.url}/openai/v1", api_key="unused", max_retries=0)


def test_streamed_answer_adds_up_to_the_non_streamed_one(client):
    # 256 tokens: the smoke aggregator's first ~100 are newlines (stripped), its visible text comes after them.
    whole = client.chat.completions.create(model="cmva", messages=QUESTION, max_tokens=256, extra_body=PROFILE)
    stream = client.chat.completions.create(
        model="cmva",
        messages=QUESTION,
        max_tokens=256,
        extra_body=PROFILE,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks, times = [], []
    for chunk in stream:
        chunks.append(chunk)
        times.append(time.monotonic())
    first, *middle, last = chunks
    assert first.choices[0].delta.role == "assistant"
    assert first.model_extra["cmva"] == whole.model_extra["cmva"]  # the agents' answers, before the aggregator's
    assert set(first.model_extra["cmva"]["agents"]) == {"care", "authority"}
    text = [
        (t, c.choices[0].delta.content) for t, c in zip(times[1:], middle, strict=False) if c.choices[0].delta.content
    ]
    assert "".join(d for _, d in text) == whole.choices[0].message.content != ""
    assert text[-1][0] - text[0][0] > 0.3 * (times[-1] - times[0])  # the tokens came as generated, not at once
    assert middle[-1].choices[0].finish_reason == "stop"
    assert last.choices == [] and last.usage == whole.usage  # include_usage: a last chunk with the usage


def test_usage_counts_the_aggregators_tokens(client):
    r = client.chat.completions.create(model="cmva", messages=QUESTION, max_tokens=6, extra_body=PROFILE)
    u = r.usage
    assert u.prompt_tokens > 50  # the aggregator's prompt holds the question and the agents' answers
    assert 1 <= u.completion_tokens <= 6
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    stream = client.chat.completions.create(
        model="cmva", messages=QUESTION, max_tokens=6, extra_body=PROFILE, stream=True
    )
    assert all(c.usage is None for c in stream)  # only asked for with stream_options.include_usage


def test_the_aggregator_streams_while_it_generates(packed):
    """The predictor's stream: text lines spread over the generation, not one burst at its end."""
    url = f"http://127.0.0.1:{packed.ports['packed']}/v1/models/cmva:stream"
    inst = {"question": "Should I lend my brother money?", "profile": {"care": 1.0}, "answers": {"care": "Yes."}}
    body = {"instances": [inst], "parameters": {"max_new_tokens": 512, "min_new_tokens": 512}}
    start, times, events = time.monotonic(), [], []
    with httpx.stream("POST", url, json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        for line in r.iter_lines():
            times.append(time.monotonic())
            events.append(json.loads(line))
    assert events[-1]["usage"]["completion_tokens"] == 512
    texts = [t for t, e in zip(times, events, strict=True) if "text" in e]
    assert len(texts) > 10
    assert texts[-1] - texts[0] > 0.3 * (times[-1] - start), (texts[0] - start, texts[-1] - start, times[-1] - start)


def test_client_leaving_a_stream_stops_the_generation(client, packed):
    """The client closes its stream after the first chunk: the transformer closes the aggregator's stream, whose
    generation stops (never counted as generated tokens) instead of running to max_tokens."""
    predictor = f"http://127.0.0.1:{packed.ports['packed']}"
    one = {"profile": {"care": 1.0}}
    before = metric(predictor, "cmva_generated_tokens_total", {"adapter": "aggregator"})
    stream = client.chat.completions.create(
        model="cmva", messages=QUESTION, max_tokens=384, extra_body=one, stream=True
    )
    next(stream)  # sent once the aggregator's stream has started
    stream.close()
    client.chat.completions.create(model="cmva", messages=QUESTION, max_tokens=1, extra_body=one)  # queued after it
    added = metric(predictor, "cmva_generated_tokens_total", {"adapter": "aggregator"}) - before
    assert added <= 1  # this last answer's token at most; the 384-token stream run to its end: ~100 more


def test_models_list_and_retrieve(client):
    assert [m.id for m in client.models.list()] == ["cmva"]
    m = client.models.retrieve("cmva")
    assert m.id == "cmva" and m.object == "model" and m.owned_by == "cmva"
    with pytest.raises(openai.NotFoundError, match="model"):
        client.models.retrieve("gpt-4o")


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"extra_body": {"profile": {"greed": 1.0}}}, "profile"),
        ({"extra_body": {}}, "profile"),
        ({"extra_body": PROFILE, "max_tokens": 0}, "max_new_tokens"),
        ({"extra_body": {**PROFILE, "min_tokens": 9}, "max_tokens": 8}, "min_new_tokens"),  # passed on, checked
        ({"extra_body": PROFILE, "stream_options": {"include_usage": "yes"}}, "stream_options"),
        ({"extra_body": {**PROFILE, "stream": "yes"}}, "stream"),
    ],
)
def test_bad_streaming_request_gets_400_naming_the_field(client, kwargs, field):
    with pytest.raises(openai.BadRequestError, match=field) as e:
        client.chat.completions.create(model="cmva", messages=QUESTION, stream=True, **kwargs)
    assert e.value.status_code == 400


@pytest.fixture(scope="module")
def stub_chain(stub_servers, tmp_path_factory):
    """A transformer in front of stand-in predictors (care, fairness, aggregator)."""
    url, proc = start_stub_transformer(stub_servers, tmp_path_factory.mktemp("transformer"))
    yield openai.OpenAI(base_url=f"{url}/openai/v1", api_key="unused", max_retries=0)
    stop(proc)


@pytest.mark.parametrize(
    "streamed",
    [
        b'{"text": "So far"}\n{"error": "aggregator generation failed: out of memory"}\n',
        b'{"text": "So far"}\n',  # the predictor went away before the end of its answer
        b'{"text": "So far"}\nnot json\n',
    ],
)
def test_stream_broken_midway_ends_with_an_error(stub_chain, stubs, streamed):
    stubs["aggregator"].answer = lambda model, body: (200, streamed)
    stream = stub_chain.chat.completions.create(
        model="cmva", messages=QUESTION, extra_body={"profile": {"care": 1.0}}, stream=True
    )
    first = next(stream)
    assert first.model_extra["cmva"]["agents"]["care"]["answer"].startswith("care says:")
    assert next(stream).choices[0].delta.content == "So far"
    with pytest.raises(openai.APIError, match="stream failed"):
        next(stream)


def test_aggregator_refusing_the_stream_is_an_error_before_it(stub_chain, stubs):
    stubs["aggregator"].answer = lambda model, body: (400, {"error": "instances.0.answers: bad"})
    with pytest.raises(openai.APIStatusError, match="aggregator predictor refused") as e:
        stub_chain.chat.completions.create(
            model="cmva", messages=QUESTION, extra_body={"profile": {"care": 1.0}}, stream=True
        )
    assert e.value.status_code == 502
