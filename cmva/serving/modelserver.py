"""KServe's ModelServer as every cmva server runs it.

- binds `--host` (KServe hard-codes 0.0.0.0; a pod needs that, `cmva serve` passes 127.0.0.1);
- the model repository's `POST /v2/repository/models/<m>/load|unload` answer 403: an unauthenticated caller
  could otherwise unload the model and every later predict would be a 404;
- readiness routes also ask the models' predictors (cmva.serving.readiness.ChainDataPlane);
- on the FastAPI app: the body-size limit (413) outside every middleware, a disconnect cancelling its
  request (cmva.serving.disconnect), cmva's 502/503/403 handlers.
"""

from __future__ import annotations

import argparse

import kserve
from kserve.model_server import app as kserve_app
from kserve.protocol.model_repository_extension import ModelRepositoryExtension

from cmva.serving.disconnect import CancelOnDisconnect
from cmva.serving.errors import Forbidden, add_error_handlers
from cmva.serving.limits import MAX_BODY_BYTES, MAX_REQUEST_TOKENS, limit_body_size
from cmva.serving.readiness import ChainDataPlane


def add_server_args(p: argparse.ArgumentParser) -> None:
    """cmva's server options, next to KServe's own parser."""
    p.add_argument("--host", default="0.0.0.0", help="address to bind (cmva serve: 127.0.0.1)")
    p.add_argument("--max_body_bytes", type=int, default=MAX_BODY_BYTES, help="larger request bodies get 413")
    p.add_argument(
        "--max_request_tokens",
        type=int,
        default=MAX_REQUEST_TOKENS,
        help="answers × max_new_tokens a request may ask for (more: 400)",
    )


class ReadOnlyRepository(ModelRepositoryExtension):
    """The repository extension behind KServe's load/unload routes, refusing both."""

    async def load(self, model_name: str) -> None:
        raise Forbidden(f"model repository: loading {model_name!r} over HTTP is disabled on this server")

    async def unload(self, model_name: str) -> None:
        raise Forbidden(f"model repository: unloading {model_name!r} over HTTP is disabled on this server")


class ModelServer(kserve.ModelServer):
    def __init__(self, host: str, http_port: int):
        super().__init__(http_port=http_port, enable_grpc=False)
        self.host = host
        self.model_repository_extension = ReadOnlyRepository(model_registry=self.registered_models)
        self.dataplane = ChainDataPlane(model_registry=self.registered_models)

    async def _serve(self):
        # RESTServer builds uvicorn's Config with host="0.0.0.0"; uvicorn reads it when it binds, just after this.
        self._rest_server.config.host = self.host
        await super()._serve()


def serve(models: list, args: argparse.Namespace, middleware: tuple = ()) -> None:
    """Serve loaded `models` with the app set up as above; `middleware`: ASGI classes for this role only."""
    for m in middleware:
        kserve_app.add_middleware(m)
    kserve_app.add_middleware(CancelOnDisconnect)
    limit_body_size(kserve_app, args.max_body_bytes)
    add_error_handlers(kserve_app)
    ModelServer(args.host, args.http_port).start(models)
