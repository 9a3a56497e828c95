"""The ``gridwatch`` command: one entry point for every service and tool."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from alerts.cli import app as alerts_app
from gridwatch.settings import get_settings

app = typer.Typer(help="gridwatch: smart-community IoT monitoring backend.", no_args_is_help=True)
registry_app = typer.Typer(help="The device registry (SQL).", no_args_is_help=True)
app.add_typer(registry_app, name="registry")
dashboards_app = typer.Typer(help="The Grafana dashboards.", no_args_is_help=True)
app.add_typer(dashboards_app, name="dashboards")
users_app = typer.Typer(help="The API's users and API keys.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(alerts_app, name="alerts")
broker_app = typer.Typer(help="Broker security: MQTT accounts, ACLs, TLS.", no_args_is_help=True)
app.add_typer(broker_app, name="broker")
credentials_app = typer.Typer(
    help="MQTT accounts of devices and services (passwords shown once).", no_args_is_help=True
)
broker_app.add_typer(credentials_app, name="credentials")

log = logging.getLogger("gridwatch")
T = TypeVar("T")


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # One line per HTTP request to InfluxDB would drown what the services say.
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _stop_on_signals() -> threading.Event:
    """An event set by SIGINT/SIGTERM, so services stop cleanly instead of dying mid-batch."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")]


@app.command()
def init(
    influx_database: Annotated[
        bool,
        typer.Option(
            "--influx-database/--no-influx-database",
            help="create the InfluxDB database and retention policy (1.x); "
            "--no-influx-database for InfluxDB 2.x/3.x, whose bucket (with its DBRP mapping) "
            "or database you made: it only checks that the database answers",
        ),
    ] = True,
) -> None:
    """Create the SQL schema (migrations) and the InfluxDB database and retention policy.

    With GW_BROKER_<SERVICE>_PASSWORD set (compose), also give those service accounts
    their passwords and write the broker's files.
    """
    from gridwatch.security import set_service_passwords
    from gridwatch.services import init_storage
    from influx.client import InfluxError

    _logging(False)
    settings = get_settings()
    try:
        init_storage(settings, create_influx_database=influx_database)
    except InfluxError as exc:
        typer.echo(f"gridwatch init: InfluxDB: {exc}", err=True)
        raise typer.Exit(1) from exc
    set_service_passwords(settings)


@registry_app.command("import")
def registry_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="community YAML file")],
) -> None:
    """Load (or reload) a community from a YAML file into the registry."""
    from gridwatch.services import import_community

    _logging(False)
    summary = import_community(get_settings(), file)
    typer.echo(f"imported {file}: {summary}")


@dashboards_app.command("push")
def dashboards_push(
    datasource_uid: Annotated[
        str, typer.Option(help="uid of that Grafana's InfluxDB data source")
    ] = "gridwatch-influxdb",
) -> None:
    """Upload the dashboards to the Grafana at GW_GRAFANA_URL (token: GW_GRAFANA_TOKEN)."""
    from dashboards.push import push

    settings = get_settings()
    if not settings.grafana_url:
        raise typer.BadParameter("set GW_GRAFANA_URL (and GW_GRAFANA_TOKEN)")
    for uid in push(settings.grafana_url, settings.grafana_token, datasource_uid=datasource_uid):
        typer.echo(f"pushed {uid}")


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="the login name")],
    role: Annotated[str, typer.Option(help="admin, operator, grid_worker or viewer")] = "admin",
    community: Annotated[str | None, typer.Option(help="the user's community")] = None,
    grid: Annotated[
        list[int] | None, typer.Option(help="a grid id a grid worker serves (repeatable)")
    ] = None,
    api_key: Annotated[
        bool, typer.Option("--api-key", help="also issue an API key (printed once)")
    ] = False,
) -> None:
    """Create an API user (the first admin, say); asks for a password unless --api-key only."""
    from api.cli import add_user

    password = (
        None if api_key else typer.prompt("password", hide_input=True, confirmation_prompt=True)
    )
    for line in add_user(get_settings(), username, role, community, grid or [], password, api_key):
        typer.echo(line)


@credentials_app.command("issue")
def credentials_issue(
    usernames: Annotated[
        list[str] | None, typer.Argument(help="device ids or service names (gridwatch.ingest…)")
    ] = None,
    community: Annotated[
        list[str] | None, typer.Option(help="also every device of this community (repeatable)")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(dir_okay=False, help="write {username: password} here (mode 0600), not out"),
    ] = None,
) -> None:
    """Issue (or rotate) MQTT accounts; the broker applies them at once. Passwords shown once."""
    from gridwatch.security import community_devices, issue_and_sync, save_secrets

    _logging(False)
    settings = get_settings()
    names = [
        *(usernames or ()),
        *(d for c in community or () for d in community_devices(settings, c)),
    ]
    if not names:
        raise typer.BadParameter("name the accounts, or --community")
    issued = _checked(lambda: issue_and_sync(settings, names))
    if out is not None:
        save_secrets(out, issued)
        typer.echo(f"{len(issued)} passwords written to {out}")
    for account in issued if out is None else ():
        typer.echo(f"{account.username} {account.password}")


@credentials_app.command("rotate")
def credentials_rotate(
    username: Annotated[str, typer.Argument(help="a device id or service name")],
) -> None:
    """A new password for an account (the old one stops working at once); shown once."""
    from gridwatch.security import issue_and_sync, listed

    _logging(False)
    settings = get_settings()
    if username not in {row.username for row in listed(settings)}:
        raise typer.BadParameter(f"{username!r} has no MQTT account to rotate: issue one")
    (account,) = issue_and_sync(settings, [username])
    typer.echo(f"{account.username} {account.password}")


@credentials_app.command("revoke")
def credentials_revoke(
    username: Annotated[str, typer.Argument(help="a device id or service name")],
) -> None:
    """Revoke an account: the broker disconnects it and refuses it from now on."""
    from gridwatch.security import revoke_and_sync

    _logging(False)
    synced = _checked(lambda: revoke_and_sync(get_settings(), username))
    typer.echo(f"revoked {username}{'' if synced.reloaded else ' (no running broker reloaded)'}")


@credentials_app.command("list")
def credentials_list() -> None:
    """Every MQTT account: kind, issued, rotated, revoked (never a password)."""
    from gridwatch.security import listed

    for row in listed(get_settings()):
        times = (_iso(row.issued_ms), _iso(row.rotated_ms), _iso(row.revoked_ms))
        typer.echo(f"{row.username:<40} {row.kind:<8} " + " ".join(f"{t:<20}" for t in times))


@broker_app.command("sync")
def broker_sync() -> None:
    """Write the broker's password and ACL files from the registry and reload the broker."""
    from gridwatch.security import sync_broker

    _logging(False)
    synced = sync_broker(get_settings())
    typer.echo(
        f"{synced.accounts} accounts, {synced.services} services; reloaded: {synced.reloaded}"
    )


@broker_app.command("dev-ca")
def broker_dev_ca(
    directory: Annotated[Path, typer.Argument(file_okay=False, help="where the files go")],
    host: Annotated[
        list[str] | None,
        typer.Option(help="a name or IP clients connect to (repeatable; default localhost)"),
    ] = None,
) -> None:
    """Development only: a CA and a broker certificate for the TLS listener (openssl)."""
    from broker.tls import make_dev_ca

    certs = make_dev_ca(directory, host or ["localhost", "127.0.0.1"])
    typer.echo(f"CA (clients: ?cafile=) {certs.ca_cert}")
    typer.echo(f"broker certfile {certs.server_cert}, keyfile {certs.server_key}")


def _iso(ms: int | None) -> str:
    from datetime import UTC, datetime

    return (
        "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )


def _checked(action: Callable[[], T]) -> T:
    """Run ``action``; an unknown account or bad name is a clear error, not a traceback."""
    from broker.accounts import BadUsername
    from broker.credentials import UnknownAccount

    try:
        return action()
    except (UnknownAccount, BadUsername) as exc:
        raise typer.BadParameter(str(exc.args[0])) from None


@app.command()
def ingest(verbose: Verbose = False) -> None:
    """Consume device messages from MQTT and store them in InfluxDB (runs until Ctrl-C)."""
    from ingest.main import run_ingest

    _logging(verbose)
    run_ingest(get_settings(), _stop_on_signals())


@app.command()
def imagery(verbose: Verbose = False) -> None:
    """Check, blur and store the patrol robots' snapshots from MQTT (runs until Ctrl-C)."""
    from imagery.main import run_imagery

    _logging(verbose)
    run_imagery(get_settings(), _stop_on_signals())


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="default: GW_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: GW_API_PORT")] = None,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from api.app import create_app

    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level="info",
        # uvloop and httptools: the event loop and HTTP parser in C (uvicorn[standard]).
        loop="uvloop",
        http="httptools",
        access_log=settings.api_access_log,
        # Longer than the idle timeout of clients and proxies (60 s in nginx and most
        # load balancers), so that they, not the API, close an idle connection: a
        # server that closes first races the next request sent on it.
        timeout_keep_alive=settings.api_keepalive_s,
    )


@app.command()
def simulate(
    community: Annotated[
        list[str] | None,
        typer.Option("--community", "-c", help="community id (repeatable)"),
    ] = None,
    communities: Annotated[
        int,
        typer.Option(
            "--communities",
            min=0,
            help="also N communities generated from the demo's shape (zb-001…), "
            "registered first if they are not yet: a city",
        ),
    ] = 0,
    scenario: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="scripted faults (simulators/scenarios/)"),
    ] = None,
    hours: Annotated[
        float | None,
        typer.Option(
            help="replay this many hours up to now first (default: the scenario's window)"
        ),
    ] = None,
    speed: Annotated[float, typer.Option(help="acceleration of the replay; 0 = flat out")] = 600.0,
    follow: Annotated[bool, typer.Option(help="carry on in real time after the replay")] = True,
    seed: Annotated[
        int | None, typer.Option(help="same seed + start + scenario = same messages (default 1)")
    ] = None,
    qos: Annotated[int, typer.Option(min=0, max=1)] = 1,
    processes: Annotated[
        int | None, typer.Option(min=1, help="simulator processes (default: 1, more for a city)")
    ] = None,
    devices_per_connection: Annotated[
        int | None,
        typer.Option(min=1, help="default: 1, more when the devices exceed 18,000 connections"),
    ] = None,
    credentials: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="JSON {device id: password}: each device logs in as itself (make run saves one; "
            "`gridwatch broker credentials issue --out` writes one)",
        ),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Run every device of the communities from the registry, publishing over MQTT."""
    from gridwatch.services import run_simulation
    from simulators.runner import Request, summary

    _logging(verbose)
    request = Request(
        communities=tuple(community or ()),
        city=communities,
        hours=hours,
        speed=speed,
        follow=follow,
        seed=seed,
        qos=qos,
        scenario=scenario,
        processes=processes,
        devices_per_connection=devices_per_connection,
        credentials=credentials,
    )
    report = run_simulation(get_settings(), request, _stop_on_signals())
    typer.echo(summary(report))


@app.command()
def run(
    hours: Annotated[float, typer.Option(help="hours of history to replay before going live")] = 24,
    speed: Annotated[float, typer.Option(help="acceleration of the replay")] = 3000,
) -> None:
    """Start the whole local stack with the demo community (what ``make run`` does)."""
    from gridwatch.local import run_local_stack

    _logging(False)
    run_local_stack(get_settings(), hours=hours, speed=speed, stop=_stop_on_signals())


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
