"""What the operator's package index holds for one project, asked by the
worker itself after a set-up step found nothing to install, so the reason can
say "only source" or "not there" instead of pip's "no matching distribution".

One GET of the project's PEP 503 page (`<index>/<normalized name>/`), with the
worker's CA bundle and a short timeout; any failure means "don't know", and
the caller keeps its general reason. The name is canonicalised first, so only
`[a-z0-9-]` ever reaches the URL.
"""

from __future__ import annotations

import logging
import os
import posixpath
import urllib.parse
from dataclasses import dataclass
from html.parser import HTMLParser

import requests
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from hivemind_celery.core.settings import Settings

log = logging.getLogger(__name__)

TIMEOUT = 5.0
MAX_PAGE = 4 * 1024 * 1024
_SOURCE_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar")


@dataclass(frozen=True)
class ProjectFiles:
    name: str  # canonical
    wheels: tuple[str, ...]
    sources: tuple[str, ...]


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.files: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href") if tag == "a" else None
        if href:
            path = urllib.parse.urlsplit(href).path
            self.files.append(urllib.parse.unquote(posixpath.basename(path)))


def project_name(requirement: str) -> str | None:
    try:
        return canonicalize_name(Requirement(requirement).name)
    except InvalidRequirement:
        return None


def project_files(settings: Settings, requirement: str, task_id: str = "") -> ProjectFiles | None:
    """The project's files on the index; an empty result when the index has
    no such project (404); None when it could not be asked."""
    name = project_name(requirement)
    if name is None:
        return None
    url = f"{settings.setup_index_url}/{name}/"
    verify: bool | str = settings.ca_bundle if os.access(settings.ca_bundle, os.R_OK) else True
    try:
        with requests.Session() as session:
            response = session.get(url, timeout=TIMEOUT, verify=verify, stream=True, headers={"Accept": "text/html"})
            if response.status_code == 404:
                return ProjectFiles(name, (), ())
            response.raise_for_status()
            body = response.raw.read(MAX_PAGE, decode_content=True)
    except (requests.RequestException, OSError) as exc:
        log.info("could not ask the package index about %s: %s", name, exc, extra={"task_id": task_id})
        return None
    parser = _Links()
    parser.feed(body.decode("utf-8", "replace"))
    wheels = tuple(f[:100] for f in parser.files if f.endswith(".whl"))
    sources = tuple(f[:100] for f in parser.files if f.endswith(_SOURCE_SUFFIXES))
    return ProjectFiles(name, wheels, sources)
