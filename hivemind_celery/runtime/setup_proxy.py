"""The set-up step's only way out: a forward proxy, and the relay that reaches it.

This file runs inside containers with nothing but the standard library (the
task image's python3): the Docker runtime passes its source to `python3 -I -c`.

    proxy CONFIG_JSON        {"socket": PATH, "allow": [[host, port], ...]}
    relay SOCKET PORT -- ARGV...

proxy: serves a Unix socket in the task's deps volume, from a container on
Docker's default bridge. It allows `CONNECT host:port` (the TLS tunnel pip uses
for https) and absolute-form `GET`/`HEAD http://host:port/...` only for the
(host, port) pairs it was given, answers anything else with 403, and prints
`DENIED host:port` for each refusal (the runtime reads these back).

relay: runs in the set-up container, whose network is `none` (only loopback):
it listens on 127.0.0.1:PORT, carries each connection to the proxy's socket,
runs ARGV (pip, told to use http://127.0.0.1:PORT as its proxy) and exits
with ARGV's exit code. The set-up container so has no route anywhere; the
proxy decides every connection it makes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.parse

HEAD_LIMIT = 16 * 1024  # one request head; pip's are a few hundred bytes
HEAD_TIMEOUT = 30.0
CONNECT_TIMEOUT = 15.0
SOCKET_WAIT = 15.0  # how long the relay waits for the proxy's socket to appear
_HOP_HEADERS = ("connection:", "proxy-connection:", "proxy-authorization:", "keep-alive:")


def host_port(text: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port` or `[v6]:port` -> (lower-case host, port)."""
    host, port = text.strip(), default_port
    if host.startswith("["):
        inner, _, rest = host[1:].partition("]")
        host = inner
        if rest.startswith(":"):
            port = int(rest[1:])
    elif host.count(":") == 1:
        host, _, number = host.partition(":")
        port = int(number)
    if not host or not 0 < port < 65536:
        raise ValueError(f"not a host[:port]: {text!r}")
    return host.lower().rstrip("."), port


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _splice(a: tuple, b: tuple) -> None:  # type: ignore[type-arg]
    try:
        await asyncio.gather(_pump(a[0], b[1]), _pump(b[0], a[1]))
    finally:
        for writer in (a[1], b[1]):
            writer.close()


async def _answer(writer: asyncio.StreamWriter, status: str, text: str) -> None:
    body = (text + "\n").encode()
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    try:
        await writer.drain()
    except (ConnectionError, OSError):
        pass
    writer.close()


class Proxy:
    def __init__(self, allow: list[tuple[str, int]]) -> None:
        self.allow = {(host.lower(), int(port)) for host, port in allow}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            await _answer(writer, "400 Bad Request", "not an HTTP request")
            return
        try:
            if method == "CONNECT":
                where = host_port(target, 443)
            elif method in ("GET", "HEAD") and target.lower().startswith("http://"):
                parts = urllib.parse.urlsplit(target)
                where = host_port(parts.netloc.rpartition("@")[2], 80)
            else:
                await _answer(writer, "405 Method Not Allowed", "only CONNECT, or GET/HEAD of http:// URLs")
                return
        except ValueError:
            await _answer(writer, "400 Bad Request", "bad target")
            return
        if where not in self.allow:
            print(f"DENIED {where[0]}:{where[1]}", flush=True)
            await _answer(writer, "403 Forbidden", f"{where[0]}:{where[1]} is not this site's package index")
            return
        try:
            upstream = await asyncio.wait_for(asyncio.open_connection(*where), CONNECT_TIMEOUT)
        except (TimeoutError, OSError) as exc:
            await _answer(writer, "502 Bad Gateway", f"cannot reach {where[0]}:{where[1]}: {exc}")
            return
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            # One request per connection: a kept-alive client could name another host next.
            path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
            kept = [line for line in lines[1:] if line and not line.lower().startswith(_HOP_HEADERS)]
            upstream[1].write("\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close", "", ""]).encode("latin-1"))
        await _splice((reader, writer), upstream)


async def _serve_proxy(config: dict) -> None:  # type: ignore[type-arg]
    proxy = Proxy([(host, port) for host, port in config["allow"]])
    path = config["socket"]
    if os.path.exists(path):
        os.unlink(path)
    server = await asyncio.start_unix_server(proxy.handle, path=path, limit=HEAD_LIMIT)
    os.chmod(path, 0o600)
    print("LISTENING", flush=True)
    async with server:
        await server.serve_forever()


async def _relay(socket_path: str, port: int, argv: list[str]) -> int:
    async def carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SOCKET_WAIT
        while True:
            try:
                upstream = await asyncio.open_unix_connection(socket_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if loop.time() >= deadline:
                    writer.close()
                    return
                await asyncio.sleep(0.1)
        await _splice((reader, writer), upstream)

    server = await asyncio.start_server(carry, "127.0.0.1", port)
    async with server:
        child = await asyncio.create_subprocess_exec(*argv)
        code = await child.wait()
    return code if code >= 0 else 128 - code


def main(args: list[str]) -> int:
    if args[:1] == ["proxy"] and len(args) == 2:
        asyncio.run(_serve_proxy(json.loads(args[1])))
        return 0
    if args[:1] == ["relay"] and len(args) > 4 and args[3] == "--":
        return asyncio.run(_relay(args[1], int(args[2]), args[4:]))
    print("usage: proxy CONFIG_JSON | relay SOCKET PORT -- ARGV...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
