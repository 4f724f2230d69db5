"""The root of every exception the project raises.

Each part keeps its own precise types (PayloadTooLarge, RuntimeRefused,
PoolError ...), all below `HivemindError`, so a caller that wants "anything
of ours went wrong" has one type to catch, and a stranger's bug (a plain
TypeError) is never mistaken for one of our refusals."""

from __future__ import annotations


class HivemindError(Exception):
    """Something the project itself refused or could not do; the message says what."""
