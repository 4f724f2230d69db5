"""What can go wrong with the tunnel, each naming what was wrong."""

from __future__ import annotations

from hivemind_celery.core import HivemindError


class TunnelError(HivemindError):
    """The tunnel could not be set up, checked or taken down."""


class TunnelConfigError(TunnelError):
    """A tunnel config (a file, or a pool's join answer) is malformed."""


class TunnelToolMissing(TunnelError):
    """A program, device or capability the tunnel needs is not there; the message names
    the Debian package or the capability to grant."""


class JoinError(TunnelError):
    """A pool did not give this site a usable tunnel; nothing on the host was changed."""
