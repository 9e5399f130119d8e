"""Entry points of the three model servers (serving/<role>/__main__.py call these).

python -m serving.agent --artifacts DIR --values care --http_port 8101                 # separate
python -m serving.agent --artifacts DIR --values care,fairness,... --with_aggregator   # packed
python -m serving.aggregator --artifacts DIR --http_port 8090
python -m serving.transformer --predictor_host 127.0.0.1:8090 --agents care=http://127.0.0.1:8101,...
"""

from __future__ import annotations

import argparse


def _parser(description: str) -> argparse.ArgumentParser:
    import kserve

    p = argparse.ArgumentParser(description=description, parents=[kserve.model_server.parser])
    p.add_argument("--values", default="care,fairness,loyalty,authority,sanctity", help="comma-separated moral values")
    return p


def _values(s: str) -> list[str]:
    from cmva.values import resolve_values

    return [v.name for v in resolve_values(s.split(","))]


def main_agent(argv=None) -> None:
    import kserve

    from cmva.serving.predictors import AgentModel, AggregatorModel, SharedBackend

    p = _parser("cmva moral agent predictor (one value, or all values packed on one base model)")
    p.add_argument("--artifacts", required=True, help="run directory or s3:// prefix")
    p.add_argument("--with_aggregator", action="store_true", help="also serve the aggregator (packed topology)")
    args, _ = p.parse_known_args(argv)
    values = _values(args.values)
    backend = SharedBackend(args.artifacts, values + (["aggregator"] if args.with_aggregator else []))
    name = values[0] if len(values) == 1 else "agents"
    models = [AgentModel(name, backend, values)]
    if args.with_aggregator:
        models.append(AggregatorModel(args.model_name, backend))
    kserve.ModelServer(http_port=args.http_port, enable_grpc=False).start(models)


def main_aggregator(argv=None) -> None:
    import kserve

    from cmva.serving.predictors import AggregatorModel, SharedBackend

    p = _parser("cmva aggregator predictor")
    p.add_argument("--artifacts", required=True, help="run directory or s3:// prefix")
    args, _ = p.parse_known_args(argv)
    kserve.ModelServer(http_port=args.http_port, enable_grpc=False).start(
        [AggregatorModel(args.model_name, SharedBackend(args.artifacts, ["aggregator"]))]
    )


def main_transformer(argv=None) -> None:
    import kserve
    from kserve.model_server import app

    from cmva.serving.openai_route import add_openai_route
    from cmva.serving.strict_json import StrictJsonNumbers
    from cmva.serving.transformer import CMVATransformer, parse_routes

    p = _parser("cmva transformer: validation, agent fan-out, aggregator call")
    p.add_argument("--agents", required=True, help="care=http://host:port,... or packed=http://host:port")
    p.add_argument("--agent_timeout_s", type=float, default=120.0)
    p.add_argument("--agent_retries", type=int, default=1)
    args, _ = p.parse_known_args(argv)
    values = _values(args.values)
    model = CMVATransformer(
        args.model_name, values, parse_routes(args.agents, values), args.agent_timeout_s, args.agent_retries
    )
    add_openai_route(app, model)
    app.add_middleware(StrictJsonNumbers)  # NaN/Infinity in a body: 400 naming the field, not a position
    kserve.ModelServer(http_port=args.http_port, enable_grpc=False).start([model])
