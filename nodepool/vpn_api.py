"""The join API of our Node Pool's VPN hub: `POST /api/vpn/join`, over HTTP.

The same path as the deployed network's, so a site's join URL means the same thing on
both; unlike it, the request is authenticated by the site's pool login
(`Authorization: Bearer <token from UserService.Login>`) and carries only the site's
public key: `{"client_name", "public_key"}`. HTTP rather than a new gRPC method keeps
proto/nodepool.proto the deployed pool's protocol, unchanged.

Answers: 200 `{"success": true, "client_ip", "network", "pool_address",
"server_public_key", "server_endpoint", "persistent_keepalive", ...}`; 401 for a
missing or refused token, 400 for a bad body or key; always `{"success": false,
"error"}` on refusal, never echoing a token.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from nodepool.auth import AuthError, TokenAuthority
from nodepool.errors import Refused
from nodepool.vpn_hub import VpnHub

log = logging.getLogger("hivemind.nodepool")


class JoinBody(BaseModel):
    client_name: str = Field("", max_length=20, pattern=r"^[A-Za-z0-9_-]*$")
    public_key: str = Field(..., max_length=64)


def _refusal(status: int, error: str) -> JSONResponse:
    return JSONResponse({"success": False, "error": error}, status_code=status)


def create_app(hub: VpnHub, tokens: TokenAuthority) -> FastAPI:
    app = FastAPI(title="HiveMind Node Pool VPN join", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestValidationError)
    async def _bad_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) or "body" for e in exc.errors())
        return _refusal(400, f"malformed join request: {fields}")

    @app.post("/api/vpn/join")
    def join(body: JoinBody, request: Request) -> Any:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _refusal(401, "missing token: log in to the pool and send Authorization: Bearer <token>")
        try:
            identity = tokens.check(token.strip())
        except AuthError as exc:
            return _refusal(401, str(exc))
        try:
            return hub.join(identity.user_id, identity.username, body.public_key, body.client_name)
        except Refused as exc:
            return _refusal(400, str(exc))

    return app


class JoinServer:
    """uvicorn serving the join API in a thread of the pool's process."""

    def __init__(self, hub: VpnHub, tokens: TokenAuthority, host: str, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(
            create_app(hub, tokens),
            host=host,
            port=port,
            log_level="warning",
            proxy_headers=False,
            server_header=False,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="vpn-join-api", daemon=True)
        self.port = port

    def start(self) -> JoinServer:
        self._thread.start()
        for _ in range(200):
            if self._server.started:
                break
            if not self._thread.is_alive():
                raise RuntimeError("the VPN join API could not start (is its port taken?)")
            self._thread.join(0.05)
        servers = getattr(self._server, "servers", [])
        if servers and servers[0].sockets:
            self.port = servers[0].sockets[0].getsockname()[1]
        log.info("VPN join API on port %d", self.port)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)
