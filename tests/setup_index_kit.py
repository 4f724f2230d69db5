"""A package index of the test's own for the set-up step: a PEP 503 simple
index over plain HTTP on 0.0.0.0 (containers reach it at docker0's address,
172.17.0.1), serving packages built here, and a second server that only
records who called it ("elsewhere": any host the set-up step must not reach).

Packages (all pure Python, built by hand as zips and tars):
- `hmwheel` 1.0: a wheel; importing it prints HMWHEEL OK.
- `hmsdist` 1.0: source only. Its in-tree build backend (no setuptools needed:
  `requires = []`, `backend-path = ["."]`) writes a marker into `marker_dir`
  (/workspace: it comes back in the result zip) and tries to reach "elsewhere" directly and through the
  proxy variables, recording what happened, then builds a wheel.
- `hmfar` 1.0: a wheel whose index page links the file on "elsewhere", so
  pip itself is sent to another host.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DOCKER_HOST = "172.17.0.1"  # the host as seen from Docker's default bridge

BACKEND = r"""
import json, os, socket, urllib.request, zipfile, base64, hashlib

def _probe(host, port):
    out = {}
    try:
        socket.create_connection((host, port), timeout=3).close(); out["direct"] = "connected"
    except OSError as exc:
        out["direct"] = f"refused: {exc}"
    proxy = urllib.request.getproxies().get("http")  # the set-up step's own, if any
    if proxy:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
        try:
            opener.open(f"http://{host}:{port}/from-sdist-via-proxy", timeout=5); out["proxy"] = "connected"
        except Exception as exc:
            out["proxy"] = f"refused: {exc}"
    return out

def _marker():
    where = @MARKER_DIR@
    result = _probe(@HOST@, @PORT@)
    with open(os.path.join(where, "SDIST_BUILD_RAN.json"), "w") as handle:
        json.dump(result, handle)

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _marker()
    name = "hmsdist-1.0-py3-none-any.whl"
    files = {"hmsdist.py": b"print('HMSDIST OK')\n",
             "hmsdist-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: hmsdist\nVersion: 1.0\n",
             "hmsdist-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: hm\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append("hmsdist-1.0.dist-info/RECORD,,")
        whl.writestr("hmsdist-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return name
"""


def wheel(name: str, version: str, module_source: str) -> tuple[str, bytes]:
    """A minimal valid pure-Python wheel: one module, METADATA, WHEEL, RECORD."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": module_source.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hm-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append(f"{dist}/RECORD,,")
        whl.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return f"{name}-{version}-py3-none-any.whl", out.getvalue()


def sdist(probe_host: str, probe_port: int, marker_dir: str) -> tuple[str, bytes]:
    """hmsdist-1.0.tar.gz, whose build writes a marker and probes the network."""
    root = "hmsdist-1.0"
    files = {
        f"{root}/PKG-INFO": b"Metadata-Version: 2.1\nName: hmsdist\nVersion: 1.0\n",
        f"{root}/pyproject.toml": b'[build-system]\nrequires = []\nbuild-backend = "hmbackend"\nbackend-path = ["."]\n',
        f"{root}/hmbackend.py": BACKEND.replace("@HOST@", repr(probe_host))
        .replace("@PORT@", str(probe_port))
        .replace("@MARKER_DIR@", repr(marker_dir))
        .encode(),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return f"{root}.tar.gz", out.getvalue()


class Recorder:
    """An HTTP server on 0.0.0.0 that serves `files` (path -> bytes) and
    records every request path."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = dict(files or {})
        self.hits: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                recorder.hits.append(self.path)
                body = recorder.files.get(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html" if self.path.endswith("/") else "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("0.0.0.0", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _page(links: dict[str, str]) -> bytes:
    anchors = "".join(f'<a href="{href}">{text}</a>\n' for text, href in links.items())
    return f"<!DOCTYPE html><html><body>\n{anchors}</body></html>\n".encode()


class LocalIndex:
    """The operator's index (`index`) and a host the set-up step must not
    reach (`elsewhere`); `url(host)` is the index URL as seen from `host`."""

    def __init__(self, probe_host: str = DOCKER_HOST, marker_dir: str = "/workspace") -> None:
        self.elsewhere = Recorder()
        good_name, good = wheel("hmwheel", "1.0", "print('HMWHEEL OK')\n")
        far_name, far = wheel("hmfar", "1.0", "print('HMFAR OK')\n")
        src_name, src = sdist(probe_host, self.elsewhere.port, marker_dir)
        self.elsewhere.files[f"/files/{far_name}"] = far
        files = {
            "/simple/": _page({p: f"/simple/{p}/" for p in ("hmwheel", "hmsdist", "hmfar")}),
            "/simple/hmwheel/": _page({good_name: f"/files/{good_name}"}),
            "/simple/hmsdist/": _page({src_name: f"/files/{src_name}"}),
            f"/files/{good_name}": good,
            f"/files/{src_name}": src,
        }
        self.index = Recorder(files)
        self.probe_host = probe_host
        self.index.files["/simple/hmfar/"] = _page({far_name: f"http://{probe_host}:{self.elsewhere.port}/files/{far_name}"})

    def url(self, host: str = DOCKER_HOST) -> str:
        return f"http://{host}:{self.index.port}/simple"

    def close(self) -> None:
        self.index.close()
        self.elsewhere.close()
