"""Issue, rotate, revoke and list MQTT accounts in SQL (the files follow with ``broker.files``).

A device's username is its device id; a service's is one of ``broker.acl``'s
``gridwatch.*`` names. Issuing an account that exists rotates it (a new
password, and a revoked account comes back). The plaintext is in the returned
``Issued`` only: SQL keeps Mosquitto's hash.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.accounts import check_username, hash_password, new_password
from broker.acl import SERVICE_RIGHTS
from broker.models import AccountKind, MqttAccount
from registry.models import Device


class UnknownAccount(LookupError):
    """No such device, service or account."""


@dataclass(frozen=True, slots=True)
class Issued:
    """A password just issued: shown this once."""

    username: str
    password: str
    kind: AccountKind


def account_kind(session: Session, username: str) -> AccountKind:
    """Whether ``username`` names a service or a registered device; UnknownAccount if neither."""
    if username in SERVICE_RIGHTS:
        return AccountKind.SERVICE
    if session.get(Device, check_username(username)) is not None:
        return AccountKind.DEVICE
    raise UnknownAccount(
        f"{username!r} is neither a registered device nor a service ({', '.join(SERVICE_RIGHTS)})"
    )


def issue(session: Session, username: str, now_ms: int, password: str | None = None) -> Issued:
    """A new password for a device or service account, rotating (and restoring) an existing one.

    ``password``: this one instead of a random one (a deployment's secret for a service).
    """
    kind = account_kind(session, username)
    password = password or new_password()
    row = session.get(MqttAccount, username)
    if row is None:
        row = MqttAccount(username=username, kind=kind, issued_ms=now_ms)
        session.add(row)
    else:
        row.rotated_ms, row.revoked_ms = now_ms, None
    row.password_hash = hash_password(password)
    return Issued(username, password, kind)


def issue_many(session: Session, usernames: Iterable[str], now_ms: int) -> list[Issued]:
    """``issue`` for each of ``usernames``."""
    return [issue(session, name, now_ms) for name in usernames]


def revoke(session: Session, username: str, now_ms: int) -> None:
    """Take an account out of the broker's password file; UnknownAccount if it has none."""
    row = session.get(MqttAccount, username)
    if row is None or row.revoked_ms is not None:
        raise UnknownAccount(f"{username!r} has no active MQTT account")
    row.revoked_ms = now_ms


def accounts(session: Session) -> list[MqttAccount]:
    """Every account, active or revoked, by username."""
    return list(session.scalars(select(MqttAccount).order_by(MqttAccount.username)))


def active(session: Session) -> list[MqttAccount]:
    """The accounts that may log in: not revoked, and a device's only while it is registered."""
    registered = select(Device.device_id).where(Device.device_id == MqttAccount.username)
    query = (
        select(MqttAccount)
        .where(MqttAccount.revoked_ms.is_(None))
        .where((MqttAccount.kind == AccountKind.SERVICE) | registered.exists())
        .order_by(MqttAccount.username)
    )
    return list(session.scalars(query))


def devices_of(session: Session, community: str) -> list[str]:
    """The device ids of a community, for issuing them all."""
    query = select(Device.device_id).where(Device.community_id == community)
    return list(session.scalars(query.order_by(Device.device_id)))
