"""The requirements set-up step as the operator, not the task, configures it.

Both runtimes run `workspace.SETUP_COMMAND` (`python3 -I -m pip install
--isolated ... -r requirements.txt`) with what this module adds:

- where from: the operator's index (HIVEMIND_SETUP_INDEX_URL) and nothing else;
  `--isolated` plus PIP_CONFIG_FILE=/dev/null mean no pip configuration file
  or PIP_* variable is read, and `python3 -I` keeps the workspace (the current
  directory) and the user site off sys.path, so a task cannot ship its own
  `pip` package, `usercustomize` or `.pth` file;
- binary-only (`--only-binary=:all:`) unless HIVEMIND_SETUP_ALLOW_SOURCE_BUILDS:
  installing a wheel runs no code of the package;
- HOME, XDG_CONFIG_HOME, XDG_CACHE_HOME and TMPDIR outside the workspace;
- a failure explained in one sentence naming the package (`explain_failure`).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Sequence

from hivemind_celery.core.settings import Settings
from hivemind_celery.payloads.workspace import SETUP_COMMAND
from hivemind_celery.runtime.index_lookup import ProjectFiles
from hivemind_celery.runtime.setup_proxy import host_port

STEP = "set-up step (pip install -r requirements.txt)"
RELAY_PORT = 3128  # the relay's port on the set-up container's loopback
_NO_MATCH = re.compile(r"No matching distribution found for (\S+)")
_VERSIONS = re.compile(r"Could not find a version that satisfies the requirement (\S+).*?\(from versions: ([^)]*)\)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# pip's words when a fetch failed for good (no route, no proxy, DNS, TLS), not a retry that then worked
# (pip warns once per retry; the one with total=0 is the last).
_UNREACHABLE = re.compile(r"Could not fetch URL|Max retries exceeded|Retrying \(Retry\(total=0,")


def index_host_port(index_url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(index_url)
    return (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


def allowed_endpoints(settings: Settings) -> list[tuple[str, int]]:
    """(host, port) pairs the set-up step may reach: the index and the hosts
    it keeps its files on."""
    found = [index_host_port(settings.setup_index_url)]
    found += [host_port(item, 443) for item in settings.setup_allowed_hosts]
    return list(dict.fromkeys(found))


def is_pip(setup_command: list[str] | None) -> bool:
    """Is this the requirements install? Any other set-up command (only tests
    build one) runs as given, with no network and none of pip's options."""
    return list(setup_command or [])[: len(SETUP_COMMAND)] == SETUP_COMMAND


def pip_options(settings: Settings, target: str, cert: str | None, proxy: str | None) -> list[str]:
    """Options appended to SETUP_COMMAND: every one the operator's."""
    options = ["--index-url", settings.setup_index_url, "--target", target]
    if urllib.parse.urlsplit(settings.setup_index_url).scheme == "http":
        # The operator chose a plain-HTTP index; without this pip ignores it.
        options += ["--trusted-host", index_host_port(settings.setup_index_url)[0]]
    if not settings.setup_allow_source_builds:
        options.append("--only-binary=:all:")
    if cert:
        options += ["--cert", cert]
    if proxy:
        options += ["--proxy", proxy]
    return options


def setup_env(home: str, tmp: str, cert: str | None, proxy: str | None) -> dict[str, str]:
    """Environment of the set-up step. The sub-pip that installs build
    requirements of a source build is not `--isolated` and reads PIP_* and
    the proxy variables: they are all ours, and PIP_CONFIG_FILE=/dev/null
    keeps it from reading any configuration file."""
    env = {
        "HOME": home,
        "XDG_CONFIG_HOME": f"{home}/.config",
        "XDG_CACHE_HOME": f"{home}/.cache",
        "TMPDIR": tmp,
        "PIP_CONFIG_FILE": "/dev/null",
        "PYTHONUNBUFFERED": "1",
        "PYTHONNOUSERSITE": "1",
    }
    if cert:
        env.update(SSL_CERT_FILE=cert, PIP_CERT=cert)
    if proxy:
        env.update(HTTP_PROXY=proxy, HTTPS_PROXY=proxy, http_proxy=proxy, https_proxy=proxy)
    return env


def explain_failure(
    log_text: str, settings: Settings, denied: Sequence[str] = (), lookup: Callable[[str], ProjectFiles | None] | None = None
) -> str | None:
    """One sentence for a failed set-up step, naming what was missing or
    refused; None when pip's output says nothing we recognise. `lookup` asks
    the index what it holds for a requirement (index_lookup.project_files)."""
    text = _ANSI.sub("", log_text)
    index = settings.setup_index_url
    if denied:
        refused = sorted(set(denied))
        hosts = ", ".join(name[:100] for name in refused[:5])
        if len(refused) > 5:
            hosts += f" and {len(refused) - 5} more"
        return (
            f"{STEP} failed: it tried to reach {hosts}, which this site does not allow (the set-up step "
            f"may reach only the package index {index} and HIVEMIND_SETUP_ALLOWED_HOSTS)"
        )
    versions = {name: listed.strip() for name, listed in _VERSIONS.findall(text)}
    names = list(dict.fromkeys(_NO_MATCH.findall(text)))
    if _UNREACHABLE.search(text):
        first = next(line.strip() for line in text.splitlines() if _UNREACHABLE.search(line))
        return f"{STEP} failed: the package index {index} could not be reached (pip: {first[:300]})"
    if not names:
        return None
    name = names[-1]
    listed = versions.get(name, "none")
    if listed and listed != "none":
        return (
            f"{STEP} failed: no version of {name!r} on the package index {index} matches the requirement "
            f"(versions there: {listed})"
        )
    files = lookup(name) if lookup is not None else None
    if files is not None and not (files.wheels or files.sources):
        return f"{STEP} failed: {name!r} is not on the package index {index}"
    if settings.setup_allow_source_builds:
        return f"{STEP} failed: {name!r} was not found on the package index {index}"
    if files is not None and not files.wheels:
        return (
            f"{STEP} failed: {name!r} is published only as source on the package index {index} "
            f"({', '.join(files.sources[:3])}), and this site installs wheels only "
            "(HIVEMIND_SETUP_ALLOW_SOURCE_BUILDS is off)"
        )
    if files is not None:
        return (
            f"{STEP} failed: {name!r} has no wheel for this image's Python and platform on the package index "
            f"{index} (its wheels there: {', '.join(files.wheels[:3])}); this site installs wheels only "
            "(HIVEMIND_SETUP_ALLOW_SOURCE_BUILDS is off)"
        )
    return (
        f"{STEP} failed: {name!r} has no wheel for this image's Python and platform on the package index "
        f"{index}; this site installs wheels only (HIVEMIND_SETUP_ALLOW_SOURCE_BUILDS is off), so a package "
        "published only as source cannot be installed (or it is not on that index at all)"
    )
