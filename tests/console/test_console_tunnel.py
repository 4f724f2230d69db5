"""The tunnel's state on the console's Overview: what the bridge's keeper publishes in its
standing hash (bridge/tunnel.py) is what the Overview reads and shows."""

from __future__ import annotations

import time

import pytest

from bridge.tunnel import publish
from hivemind.console.site_view import SiteView
from hivemind_celery.core import keys
from hivemind_celery.core.settings import Settings
from vpn.tunnel import TunnelStatus

pytestmark = pytest.mark.redis


def test_the_overview_shows_the_tunnel_as_the_bridge_published_it(redis_client, redis_url) -> None:
    redis_client.delete(keys.bridge_status())
    view = SiteView(redis_client, Settings(redis_url=redis_url))
    assert view.overview().tunnel == ""  # a site without a tunnel shows none
    status = TunnelStatus(
        interface="hmwg0",
        joined=True,
        up=True,
        address="10.88.0.2",
        network="10.88.0.0/24",
        pool_address="10.88.0.1",
        handshake_age=12.0,
    )
    publish(redis_client, status, "up")
    overview = view.overview()
    assert (overview.tunnel, overview.tunnel_address, overview.tunnel_network) == ("up", "10.88.0.2", "10.88.0.0/24")
    assert overview.tunnel_handshake_at is not None and abs(time.time() - 12.0 - overview.tunnel_handshake_at) < 5
    publish(redis_client, None, "down")
    overview = view.overview()
    assert overview.tunnel == "down" and overview.tunnel_address == "" and overview.tunnel_handshake_at is None


def test_the_overview_template_renders_the_tunnel_row() -> None:
    from jinja2 import Environment, FileSystemLoader

    from hivemind.console.site_view import Overview

    env = Environment(loader=FileSystemLoader("hivemind/console/templates"), autoescape=True)
    env.filters["ago"] = lambda value: "never" if value is None else "12 s ago"
    base = dict(
        joined=True,
        node_id="site1",
        pool="pool:50051",
        pool_status="Idle",
        pool_error="",
        last_beat=None,
        state="Idle",
        why="ready",
        running=0,
        workers=1,
        worker_beat=None,
        cpt_today=0,
        cpt_total=0,
        balance=None,
        balance_note="",
    )
    html = env.get_template("_overview.html").render(
        overview=Overview(
            **base, tunnel="up", tunnel_address="10.88.0.2", tunnel_network="10.88.0.0/24", tunnel_handshake_at=time.time()
        )
    )
    assert 'id="tunnel"' in html and "10.88.0.2 in 10.88.0.0/24" in html and "12 s ago" in html
    assert 'id="tunnel"' not in env.get_template("_overview.html").render(overview=Overview(**base))
