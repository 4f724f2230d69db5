"""The one error type the pool's logic raises for a refused request."""

from hivemind_celery.core import HivemindError


class Refused(HivemindError):
    """A request the pool turns down; the message names what was wrong and goes back to the caller."""
