"""Commands to devices: send one, follow its status, read the audit trail.

A command is checked against the kind's argument schema (``KIND.commands``),
stored as ``queued`` with who sent it, published on the device's ``cmd`` topic
at QoS 1 with ``expires_ts``, and then follows the device (``api/dispatch.py``):
``sent`` → ``acknowledged`` / ``failed``, or ``expired`` without an ack.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.crud import Page, in_community, paginate, writing
from api.deps import Actor, CommunityQuery, CurrentUser, PagingDep, SessionDep, StateDep
from api.models import Command, CommandStatus
from api.routes.devices import DeviceId, allowed_devices, scoped_record
from devices import KINDS

router = APIRouter(prefix="/api/v1", tags=["commands"])

MAX_TTL_S = 3600
CommandId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class CommandCreate(BaseModel):
    """A command for a device: its name and arguments as the device's kind defines them."""

    name: Annotated[str, Field(pattern=r"^[a-z_]{1,32}$", examples=["unlock"])]
    args: dict[str, Any] = Field(default={}, examples=[{"duration_s": 5}])
    ttl_s: Annotated[int, Field(ge=1, le=MAX_TTL_S)] | None = Field(
        None, description="seconds until it expires (default GW_API_COMMAND_TTL_S)"
    )


class CommandPublic(BaseModel):
    """A command and its fate: the audit record (who, what, when, result)."""

    cmd_id: str
    device_id: str
    community: str
    kind: str
    name: str
    args: dict[str, Any]
    status: CommandStatus
    requested_by: str
    created_ms: int
    expires_ms: int
    sent_ms: int | None
    finished_ms: int | None
    ack_ts: int | None
    error: str | None

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "cmd_id": "c-5f0c2a9e4b7d4c1e",
                    "device_id": "zjxc-door-b03-u2",
                    "community": "zjxc",
                    "kind": "door",
                    "name": "unlock",
                    "args": {"duration_s": 5},
                    "status": "acknowledged",
                    "requested_by": "li.xiumei",
                    "created_ms": 1795370400000,
                    "expires_ms": 1795370460000,
                    "sent_ms": 1795370400004,
                    "finished_ms": 1795370400180,
                    "ack_ts": 1795370400150,
                    "error": None,
                }
            ]
        }
    }


def command_public(row: Command) -> CommandPublic:
    """The public view of a command row."""
    return CommandPublic(
        cmd_id=row.id,
        device_id=row.device_id,
        community=row.community_id,
        kind=row.kind,
        name=row.name,
        args=row.args,
        status=CommandStatus(row.status),
        requested_by=row.requested_by,
        created_ms=row.created_ms,
        expires_ms=row.expires_ms,
        sent_ms=row.sent_ms,
        finished_ms=row.finished_ms,
        ack_ts=row.ack_ts,
        error=row.error,
    )


def _checked_args(kind: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    schema = KINDS[kind].commands.get(name)
    if schema is None:
        known = ", ".join(sorted(KINDS[kind].commands))
        raise HTTPException(422, f"a {kind} has no command {name!r} (known: {known})")
    try:
        checked: dict[str, Any] = msgspec.to_builtins(msgspec.convert(args, schema))
    except msgspec.ValidationError as exc:
        raise HTTPException(422, f"args: {exc}") from None
    return checked


@router.post(
    "/devices/{device_id}/commands",
    response_model=CommandPublic,
    status_code=202,
    responses={404: {}, 422: {}},
)
def send_command(
    device_id: DeviceId, body: CommandCreate, principal: Actor, state: StateDep, session: SessionDep
) -> CommandPublic:
    """Send a command; 202 with its record, whose status then follows the device."""
    record = scoped_record(state, session, principal, device_id)
    args = _checked_args(record.kind, body.name, body.args)
    now = state.clock.now_ms()
    ttl_ms = (body.ttl_s or state.settings.api_command_ttl_s) * 1000
    with writing(state) as write:
        row = Command(
            id=f"c-{uuid.uuid4().hex[:16]}",
            device_id=record.device_id,
            community_id=record.community,
            kind=record.kind,
            name=body.name,
            args=args,
            status=CommandStatus.QUEUED.value,
            requested_by=principal.username,
            created_ms=now,
            expires_ms=now + ttl_ms,
        )
        write.add(row)
    state.metrics.commands.labels(CommandStatus.QUEUED.value).inc()
    state.dispatcher.publish(row)
    return command_public(row)


@router.get("/commands", response_model=Page[CommandPublic])
def list_commands(
    principal: CurrentUser,
    state: StateDep,
    session: SessionDep,
    paging: PagingDep,
    community: CommunityQuery = None,
    device_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
    status: CommandStatus | None = None,
) -> Page[CommandPublic]:
    """Commands you may see, newest first: the audit trail."""
    query = in_community(
        select(Command).order_by(Command.created_ms.desc(), Command.id),
        Command.community_id,
        principal,
        community,
    )
    if device_id is not None:
        query = query.where(Command.device_id == device_id)
    if status is not None:
        query = query.where(Command.status == status.value)
    allowed = allowed_devices(state, session, principal)
    if allowed is not None:
        query = query.where(Command.device_id.in_(allowed))
    return paginate(session, query, paging, command_public)


@router.get("/commands/{cmd_id}", response_model=CommandPublic, responses={404: {}})
def read_command(
    cmd_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")],
    principal: CurrentUser,
    state: StateDep,
    session: SessionDep,
) -> CommandPublic:
    """One command and where it stands."""
    row = session.get(Command, cmd_id)
    allowed = allowed_devices(state, session, principal)
    if (
        row is None
        or not principal.sees_community(row.community_id)
        or (allowed is not None and row.device_id not in allowed)
    ):
        raise HTTPException(404, f"command {cmd_id} not found")
    return command_public(row)
