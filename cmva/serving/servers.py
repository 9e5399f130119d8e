"""Entry points of the three model servers (serving/<role>/__main__.py call these).

python -m serving.agent --artifacts DIR --values care --http_port 8101                 # separate
python -m serving.agent --artifacts DIR --values care,fairness,... --with_aggregator   # packed
python -m serving.aggregator --artifacts DIR --http_port 8090
python -m serving.transformer --predictor_host 127.0.0.1:8090 --agents care=http://127.0.0.1:8101,...
python -m serving.transformer ... --predictor_api openai --artifacts DIR   # chat completions (cmva or vLLM)
python -m serving.transformer ... --predictor_api openai --openai_server vllm ...   # vLLM's own server
"""

from __future__ import annotations

import argparse

from cmva.serving.openai_server import SERVERS


def _parser(description: str) -> argparse.ArgumentParser:
    import kserve

    from cmva.serving.modelserver import add_server_args

    p = argparse.ArgumentParser(description=description, parents=[kserve.model_server.parser])
    p.add_argument("--values", default="care,fairness,loyalty,authority,sanctity", help="comma-separated moral values")
    add_server_args(p)
    return p


def _predictor_parser(description: str) -> argparse.ArgumentParser:
    from cmva.config import GENERATION_DTYPES

    p = _parser(description)
    p.add_argument("--artifacts", required=True, help="run directory or s3:// prefix")
    p.add_argument("--max_queue", type=int, default=256, help="generation jobs that may wait (more: 503)")
    p.add_argument(
        "--dtype",
        choices=GENERATION_DTYPES,
        default=None,
        help="the base model's dtype (bfloat16: CPUs with native bf16 or GPUs; float16-weights: CPUs, float16 "
        "linear weights; both faster, answers may differ); default: the base's own on a CPU (its decoding.json "
        "cpu_dtype, as evaluated), else float32",
    )
    return p


def _values(s: str) -> list[str]:
    from cmva.values import resolve_values

    return [v.name for v in resolve_values(s.split(","))]


def _load_and_serve(models: list, args) -> None:
    """KServe's convention: load the weights, then serve (readiness follows `load()`).

    Every server gets StrictJsonNumbers: NaN/Infinity in a body → 400 naming the field, not a position.
    """
    from cmva.serving.modelserver import serve
    from cmva.serving.strict_json import StrictJsonNumbers

    for m in models:
        m.load()
    serve(models, args, (StrictJsonNumbers,))


def _add_release_routes(models: list, versions) -> None:
    """V2 model metadata with the served run id (cmva.serving.release)."""
    from kserve.model_server import app

    from cmva.serving.release import add_metadata_routes

    add_metadata_routes(app, models, versions)


def _add_stream_route(model) -> None:
    """The aggregator's answer streamed as generated (cmva.serving.stream_route)."""
    from kserve.model_server import app

    from cmva.serving.stream_route import add_stream_route

    add_stream_route(app, model)


def _add_chat_route(backend, args) -> None:
    """The adapters as OpenAI chat completions, `model` naming one (cmva.serving.chat_route)."""
    from kserve.model_server import app

    from cmva.serving.chat_route import add_chat_route

    add_chat_route(app, backend, args.max_request_tokens)


def main_agent(argv=None) -> None:
    from cmva.serving.predictors import AgentModel, AggregatorModel, SharedBackend
    from cmva.serving.release import backend_versions

    p = _predictor_parser("cmva moral agent predictor (one value, or all values packed on one base model)")
    p.add_argument("--with_aggregator", action="store_true", help="also serve the aggregator (packed topology)")
    args, _ = p.parse_known_args(argv)
    values = _values(args.values)
    adapters = values + (["aggregator"] if args.with_aggregator else [])
    backend = SharedBackend(args.artifacts, adapters, args.max_queue, args.dtype)
    name = values[0] if len(values) == 1 else "agents"
    models = [AgentModel(name, backend, values, args.max_request_tokens)]
    if args.with_aggregator:
        models.append(AggregatorModel(args.model_name, backend, values, args.max_request_tokens))
        _add_stream_route(models[-1])
    _add_chat_route(backend, args)
    _add_release_routes(models, backend_versions(backend))
    _load_and_serve(models, args)


def main_aggregator(argv=None) -> None:
    from cmva.serving.predictors import AggregatorModel, SharedBackend
    from cmva.serving.release import backend_versions

    p = _predictor_parser("cmva aggregator predictor")
    args, _ = p.parse_known_args(argv)
    backend = SharedBackend(args.artifacts, ["aggregator"], args.max_queue, args.dtype)
    models = [AggregatorModel(args.model_name, backend, _values(args.values), args.max_request_tokens)]
    _add_stream_route(models[0])
    _add_chat_route(backend, args)
    _add_release_routes(models, backend_versions(backend))
    _load_and_serve(models, args)


def _add_predictor_api_args(p: argparse.ArgumentParser) -> None:
    # Not KServe's --predictor_protocol: KServe parses that flag itself on import, and refuses any value but
    # v1, v2 or grpc-v2.
    p.add_argument(
        "--predictor_api",
        choices=["v1", "openai"],
        default="v1",
        help="how to ask agents and aggregator: KServe V1 (cmva's predictors) or OpenAI chat completions, "
        "the adapter named by `model` (cmva's predictors or vLLM)",
    )
    p.add_argument("--artifacts", help="openai: the predictors' artifacts URI, for the aggregator's ranking.json")
    p.add_argument("--aggregator_adapter", default="aggregator", help="openai: the aggregator's LoRA name")
    p.add_argument(
        "--openai_server",
        choices=sorted(SERVERS),
        default="kserve",
        help="openai: the predictors' kind of server, for its paths: kserve (KServe's runtimes and cmva's "
        "predictors: /openai/v1/chat/completions, /v2/health/ready) or vllm (vLLM's own server, as in an "
        "LLMInferenceService: /v1/chat/completions, /health)",
    )


def _chat_aggregator(p: argparse.ArgumentParser, args):
    """The OpenAI protocol's aggregator side (cmva.serving.chat_aggregator), None in V1 mode."""
    if args.predictor_api == "v1":
        return None
    if not args.artifacts:
        p.error("--predictor_api openai needs --artifacts (the aggregator's ranking.json)")
    from cmva.serving.chat_aggregator import ChatAggregator

    return ChatAggregator(args.artifacts, args.aggregator_adapter, SERVERS[args.openai_server])


def main_transformer(argv=None) -> None:
    from kserve.model_server import app

    from cmva.serving.openai_route import add_openai_route
    from cmva.serving.release import chain_versions
    from cmva.serving.transformer import CMVATransformer, parse_routes

    p = _parser("cmva transformer: validation, agent fan-out, aggregator call")
    p.add_argument("--agents", required=True, help="care=http://host:port,... or packed=http://host:port")
    p.add_argument("--agent_timeout_s", type=float, default=120.0)
    p.add_argument("--agent_retries", type=int, default=1)
    _add_predictor_api_args(p)
    args, _ = p.parse_known_args(argv)
    values = _values(args.values)
    routes = parse_routes(args.agents, values, SERVERS[args.openai_server])
    model = CMVATransformer(
        args.model_name,
        values,
        routes,
        args.agent_timeout_s,
        args.agent_retries,
        args.max_request_tokens,
        _chat_aggregator(p, args),
    )
    add_openai_route(app, model)
    _add_release_routes([model], chain_versions(model))
    _load_and_serve([model], args)
