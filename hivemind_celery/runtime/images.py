"""Making sure a task's image is allowed and present before anything starts."""

from __future__ import annotations

import logging
import time

import docker
from docker.errors import APIError, DockerException, ImageNotFound

from hivemind_celery.core.settings import Settings
from hivemind_celery.runtime.base import RuntimeRefused

log = logging.getLogger(__name__)

# Images seen present lately (name -> monotonic time of the check): one
# inspect per image a minute instead of one per task. An image removed in
# between makes `containers.create` fail with ImageNotFound, which the driver
# reports and answers with `forget_image`.
PRESENT_FOR_S = 60.0
_seen_present: dict[str, float] = {}


def forget_image(image: str) -> None:
    _seen_present.pop(image, None)


class ImageUnavailable(RuntimeRefused):
    """The image cannot be used on this worker; the message says why."""


class ImageNotAllowed(ImageUnavailable):
    pass


def ensure_image(client: docker.DockerClient, settings: Settings, image: str, task_id: str = "") -> None:
    """Raise ImageNotAllowed or ImageUnavailable, or return with the image present."""
    if not settings.image_allowed(image):
        raise ImageNotAllowed(
            f"image {image!r} is not allowed on this worker (allowed: {settings.task_image}"
            + "".join(f", {name}" for name in settings.allowed_images)
            + ")"
        )
    seen = _seen_present.get(image)
    if seen is not None and time.monotonic() - seen < PRESENT_FOR_S:
        return
    try:
        client.images.get(image)
        _seen_present[image] = time.monotonic()
        return
    except ImageNotFound:
        pass
    except (APIError, DockerException) as exc:
        raise ImageUnavailable(f"image {image!r} could not be inspected: {exc}") from exc
    log.info("pulling image", extra={"task_id": task_id, "image": image})
    try:
        _pull(client, image, settings.image_pull_timeout)
        client.images.get(image)
        _seen_present[image] = time.monotonic()
    except (APIError, DockerException, TimeoutError, OSError) as exc:
        raise ImageUnavailable(f"image {image!r} is not present on this worker and could not be pulled: {exc}") from exc


def _pull(client: docker.DockerClient, image: str, timeout: float) -> None:
    """Pull one tag (never all tags), giving up after `timeout` seconds: the
    deadline is checked between progress messages, each of which is bounded by
    the client's own request timeout."""
    deadline = time.monotonic() + timeout
    # api.pull splits "repo:tag" / "repo@digest" itself and defaults to
    # "latest"; all_tags stays False.
    stream = client.api.pull(image, stream=True, decode=True)
    try:
        for message in stream:
            if "error" in message:
                raise APIError(str(message.get("error")))
            if time.monotonic() > deadline:
                raise TimeoutError(f"pull took longer than {timeout:g} s")
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()
