"""The one error type the pool's logic raises for a refused request."""


class Refused(Exception):
    """A request the pool turns down; the message names what was wrong and goes back to the caller."""
