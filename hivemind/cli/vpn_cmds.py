"""`hivemind vpn join|up|down|status`: the site's WireGuard tunnel to its Node Pool
(docs/tunnel.md). They read the HIVEMIND_TUNNEL_* settings; up/down need root
(CAP_NET_ADMIN) because they create and remove a network interface."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import typer

vpn_app = typer.Typer(no_args_is_help=True, help="The WireGuard tunnel to the Node Pool (for a site behind NAT).")


def _tunnel(detach: bool = False) -> Any:
    from bridge.session import Session, open_channel
    from hivemind_celery.core import get_settings
    from vpn.tunnel import Tunnel

    settings = get_settings()

    def token() -> str:  # the site's pool login, only for joins to our own pool
        channel = open_channel(settings)
        try:
            return Session(settings, channel).token()
        finally:
            channel.close()

    return Tunnel(settings, token=token, detach=detach)


def _run(action: Any) -> Any:
    from hivemind.cli.common import fail
    from hivemind_celery.core import HivemindError

    try:
        return action()
    except HivemindError as exc:
        raise fail(str(exc)) from None


@vpn_app.command("join")
def join(force: bool = typer.Option(False, "--force", help="Join again even when a config is kept.")) -> None:
    """Ask the pool for a tunnel and keep its config (0600); changes nothing on the network."""
    tunnel = _tunnel()
    if tunnel.store.exists() and not force:
        typer.echo(f"a tunnel config is already kept in {tunnel.state_dir} (--force to join again)")
        return
    joined = _run(tunnel.join)
    typer.echo(
        f"joined ({joined.record.mode}): tunnel address {joined.config.address.ip}, VPN network "
        f"{joined.record.network}, pool endpoint {joined.record.endpoint}"
    )
    if joined.record.pool_generated_key:
        typer.echo("note: the deployed network generated this site's private key, so that pool knows it")


@vpn_app.command("up")
def up() -> None:
    """Join if needed, bring the tunnel up (only the VPN network is routed) and wait for a handshake.
    wireguard-go, when used, keeps running after this command: `hivemind vpn down` ends it."""
    status = _run(_tunnel(detach=True).up)
    typer.echo(
        f"tunnel {status.interface} up: address {status.address}, routing only {status.network}, "
        f"handshake {status.handshake_age:.0f}s ago"
    )


@vpn_app.command("down")
def down() -> None:
    """Remove the tunnel interface (with its address and route); the kept config stays."""
    _run(_tunnel().down)
    typer.echo("tunnel down")


@vpn_app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Joined or not, up or not, address, VPN network, latest handshake. Exit 1 unless up with a handshake."""
    state = _run(_tunnel().status)
    if as_json:
        typer.echo(json.dumps({**asdict(state), "healthy": state.healthy}, indent=2))
    else:
        age = "none yet" if state.handshake_age is None else f"{state.handshake_age:.0f}s ago"
        typer.echo(f"interface {state.interface}: {'up' if state.up else 'down'}; {'joined' if state.joined else 'not joined'}")
        if state.joined:
            typer.echo(
                f"address {state.address} in {state.network} ({state.mode}); pool {state.endpoint}"
                f"{' at ' + state.pool_address if state.pool_address else ''}; latest handshake {age}"
            )
    if not state.healthy:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(vpn_app, name="vpn")
