"""A STAND-IN for the deployed network's VPN join endpoint, written from
../shared/design/REACHABILITY.md (the deployed pool itself cannot run here).

`POST /api/vpn/join`, JSON body `{"client_name"}` (used only if <= 20 letters,
digits, _ or -), no authentication, one request per 5 s per client IP (429
`{"error", "rate_limit_seconds", "client_ip"}`). On success 200 with `success`,
`message`, `config` (a whole wg-quick file: the private key generated HERE, by the
server, `Address = <ip>/24`, `DNS = 8.8.8.8, 1.1.1.1`, `MTU = 1420`, the server's
key, `Endpoint`, `AllowedIPs`, `PersistentKeepalive = 25`), `client_name`,
`client_ip`, `server_endpoint`, `generated_at`, `config_file_path`, `filename`;
failure 500 `{"success": false, "error"}`. When given a hub interface it adds the
new peer there with `wg set`, as the deployed pool does on its WireGuard server.

`misbehave` makes it answer as a broken or hostile pool would (tests of refusals).
Run in-process (`StandIn(...).start()`) or in a namespace: `python -m
tests.vpn.deployed_join_standin --port P --hub IF --server-key K --endpoint H:P`.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import subprocess
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from vpn.keys import generate_key_pair

RATE_LIMIT_SECONDS = 5
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,20}$")


class StandIn:
    def __init__(
        self,
        server_public_key: str,
        endpoint: str,
        network: str = "10.0.0.0/24",
        host: str = "127.0.0.1",
        port: int = 0,
        hub_interface: str | None = None,
        allowed_ips: str | None = None,
        misbehave: str | None = None,
    ) -> None:
        self.server_public_key = server_public_key
        self.endpoint = endpoint
        self.network = ipaddress.ip_network(network)
        self.allowed_ips = allowed_ips or str(self.network)
        self.hub_interface = hub_interface
        self.misbehave = misbehave
        self.requests: list[dict] = []
        self._last_seen: dict[str, float] = {}
        self._next = 2  # .1 is the server's
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.port = self.httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self.httpd.server_address[0]
        return f"http://{host}:{self.port}/api/vpn/join"

    def start(self) -> StandIn:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, client_ip: str, body: dict) -> tuple[int, bytes]:
        with self._lock:
            self.requests.append(body)
            now = time.monotonic()
            last = self._last_seen.get(client_ip)
            self._last_seen[client_ip] = now
            if self.misbehave == "429" or (last is not None and now - last < RATE_LIMIT_SECONDS):
                return 429, json.dumps(
                    {"error": "too many requests", "rate_limit_seconds": RATE_LIMIT_SECONDS, "client_ip": client_ip}
                ).encode()
            if self.misbehave == "500":
                return 500, json.dumps({"success": False, "error": "failed to generate config"}).encode()
            if self.misbehave == "notjson":
                return 200, b"<html><body>502 Bad Gateway</body></html>"
            name = body.get("client_name") if isinstance(body.get("client_name"), str) else ""
            if not _NAME.match(name):
                name = f"client_{int(time.time())}"
            address = self.network.network_address + self._next
            self._next += 1
        keys = generate_key_pair()  # the server makes the client's private key: it knows it
        server_key = "not-a-key" if self.misbehave == "badkey" else self.server_public_key
        config = (
            f"[Interface]\nPrivateKey = {keys.private_key}\nAddress = {address}/24\nDNS = 8.8.8.8, 1.1.1.1\n"
            f"MTU = 1420\n\n[Peer]\nPublicKey = {server_key}\nEndpoint = {self.endpoint}\n"
            f"AllowedIPs = {self.allowed_ips}\nPersistentKeepalive = 25\n"
        )
        if self.hub_interface:
            subprocess.run(["wg", "set", self.hub_interface, "peer", keys.public_key, "allowed-ips", f"{address}/32"], check=True)
        return 200, json.dumps(
            {
                "success": True,
                "message": "VPN config generated",
                "config": config,
                "client_name": name,
                "client_ip": str(address),
                "server_endpoint": self.endpoint,
                "generated_at": datetime.now(UTC).isoformat(),
                "config_file_path": f"/tmp/{name}.conf",
                "filename": f"{name}.conf",
            }
        ).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                if self.path != "/api/vpn/join":
                    self._send(404, b'{"error": "not found"}')
                    return
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {}
                status, payload = standin.answer(self.client_address[0], body if isinstance(body, dict) else {})
                self._send(status, payload)

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: object) -> None:
                pass

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hub")
    parser.add_argument("--server-key", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--network", default="10.0.0.0/24")
    parser.add_argument("--allowed-ips")
    args = parser.parse_args()
    standin = StandIn(args.server_key, args.endpoint, args.network, args.host, args.port, args.hub, args.allowed_ips)
    print("ready", flush=True)
    standin.httpd.serve_forever()


if __name__ == "__main__":
    main()
