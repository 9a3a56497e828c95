"""``gridwatch alerts``: the service when given no subcommand; list, ack, resolve, comment.

Imports stay inside the commands, so loading the ``gridwatch`` command costs nothing.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="Alerts: run the service (no subcommand), or list and act on alerts.",
    invoke_without_command=True,
)

AlertId = Annotated[int, typer.Argument(help="the alert's number (#12 in its messages)")]
By = Annotated[str, typer.Option("--by", help="who (a name, as the messages show it)")]


@app.callback()
def alerts(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    """Run the rules on the MQTT stream and send the notifications (runs until Ctrl-C)."""
    if ctx.invoked_subcommand is not None:
        return
    from alerts.main import run_alerts
    from gridwatch.cli import _logging, _stop_on_signals
    from gridwatch.settings import get_settings

    _logging(verbose)
    run_alerts(get_settings(), _stop_on_signals())


@app.command("list")
def list_command(
    everything: Annotated[bool, typer.Option("--all", help="resolved ones too")] = False,
    limit: Annotated[int, typer.Option(min=1, help="at most this many, newest first")] = 50,
) -> None:
    """The newest alerts (unresolved ones unless --all)."""
    from alerts.main import list_alerts
    from gridwatch.settings import get_settings

    for line in list_alerts(get_settings(), everything=everything, limit=limit):
        typer.echo(
            f"#{line.id:<6} {line.opened:%m-%d %H:%M} {line.status:<12} {line.severity:<8} "
            f"{line.rule:<22} {line.title}  {line.place}"
        )


def _act(action: str, alert_id: int, by: str, text: str | None) -> None:
    from alerts.main import act_on_alert
    from alerts.store import AlertError
    from gridwatch.settings import get_settings

    try:
        act_on_alert(get_settings(), action, alert_id, by, text)
    except AlertError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"alert #{alert_id}: {action} by {by}")


@app.command()
def ack(
    alert_id: AlertId,
    by: By,
    note: Annotated[str | None, typer.Option(help="a remark")] = None,
) -> None:
    """Acknowledge an open alert (it stops escalating)."""
    _act("acknowledge", alert_id, by, note)


@app.command()
def resolve(
    alert_id: AlertId,
    by: By,
    note: Annotated[str | None, typer.Option(help="what was done")] = None,
) -> None:
    """Resolve an alert (whoever was told hears of it)."""
    _act("resolve", alert_id, by, note)


@app.command()
def comment(
    alert_id: AlertId,
    by: By,
    text: Annotated[str, typer.Option(help="the remark")],
) -> None:
    """Add a remark to an alert."""
    _act("comment", alert_id, by, text)
