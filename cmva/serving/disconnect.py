"""ASGI middleware: a client that disconnects before its answer cancels the request's handler.

Starlette keeps running a handler whose client has gone; here its generation jobs would still be queued
and generated for nobody (a transformer that timed out on an agent, a client that gave up). Once the app
has read the whole body, this middleware listens for `http.disconnect` and cancels the app's task; the
batcher then drops that request's queued jobs (see cmva.serving.batcher).
"""

from __future__ import annotations

import asyncio
import contextlib


class CancelOnDisconnect:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cycle = _Cycle(receive, send)
        app = asyncio.ensure_future(self.app(scope, cycle.receive, cycle.send))
        gone = asyncio.ensure_future(cycle.client_gone())
        try:
            await asyncio.wait({app, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not app.done() and not cycle.response_complete:
                app.cancel()  # nobody is waiting for this answer
                with contextlib.suppress(asyncio.CancelledError):
                    await app
                return
            await app  # the response (or the app's own exception)
        finally:
            gone.cancel()
            app.cancel()


class _Cycle:
    """Passes the request body through; after it, one listener waits for the client to go."""

    def __init__(self, receive, send):
        self._receive, self._send = receive, send
        self._body_read = asyncio.Event()
        self._disconnect: asyncio.Future = asyncio.get_running_loop().create_future()
        self.response_complete = False

    async def receive(self):
        if self._body_read.is_set():  # the app asks again (e.g. is_disconnected): answered by the listener
            return await asyncio.shield(self._disconnect)
        message = await self._receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            self._body_read.set()
        if message["type"] == "http.disconnect" and not self._disconnect.done():
            self._disconnect.set_result(message)
        return message

    async def send(self, message):
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.response_complete = True
        await self._send(message)

    async def client_gone(self) -> None:
        """Returns when the client disconnects (or the server ends the cycle) after the body was read."""
        await self._body_read.wait()
        if not self._disconnect.done():
            message = await self._receive()
            if not self._disconnect.done():
                self._disconnect.set_result(message)
