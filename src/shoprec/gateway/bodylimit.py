"""Request body size cap: 413 ``request body too large`` past ``Settings.max_body_bytes``.

uvicorn and Starlette buffer whatever body a client sends; this pure ASGI middleware refuses
a declared ``Content-Length`` above the cap before reading anything, and stops a body sent
without one (chunked) as soon as the bytes received pass the cap. The second case raises
``HTTPException(413)`` out of ``receive``: FastAPI re-raises an ``HTTPException`` from body
reading unchanged, so the client gets the same 413 either way.
"""

from __future__ import annotations

import json
from typing import Final

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_TOO_LARGE: Final = "request body too large"


class BodySizeLimit:
    """Pure ASGI middleware capping HTTP request bodies at ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, BODY_TOO_LARGE)
            return message

        await self.app(scope, counted, send)


async def _refuse(send: Send) -> None:
    body = json.dumps({"detail": BODY_TOO_LARGE}, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status.HTTP_413_CONTENT_TOO_LARGE,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
