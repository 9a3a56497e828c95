"""Signed, expiring links to a snapshot's privacy version and thumbnail.

A grid worker opens an alert's frame from a WeCom message on a phone, an
operator from a Grafana table: neither can send a bearer token or an API key.
So the link carries its own permission, ``?expires=<Unix s>&sig=<hex>``: an
HMAC-SHA256 under ``GW_SNAPSHOT_LINK_KEY`` of the snapshot's row id, the
variant and the expiry. Only the privacy version and the thumbnail can be
signed; the original (faces unblurred) stays behind an admin's credentials.

A link lives as long as its image: until the snapshot's retention ends (the
image is deleted then), and at most ``GW_SNAPSHOT_LINK_MAX_DAYS``.

No OpenCV here: the alerts service and the API use this module.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from gridwatch.settings import Settings
from imagery.files import Variant
from imagery.models import Snapshot
from registry.models import Community

SIGNABLE = frozenset({Variant.PRIVACY, Variant.THUMBNAIL})
DAY_S = 86_400
# make run's processes (API, alerts) must verify each other's links: one key in GW_STATE_DIR.
DEV_KEY_FILE = "snapshot-link-key"


class LinkRefused(ValueError):
    """A signed link that does not open: its message says why (expired, forged, original)."""


@dataclass(frozen=True, slots=True)
class SnapshotLinks:
    """Signs and checks snapshot links with one key."""

    key: bytes
    max_days: int = 30
    retention_days: int = 30  # GW_IMAGERY_RETENTION_DAYS, for communities without their own

    @classmethod
    def from_settings(cls, settings: Settings) -> SnapshotLinks:
        """The configured key; in development without one, the one kept in GW_STATE_DIR."""
        key = settings.required_snapshot_link_key() or development_key(
            settings.state_dir / DEV_KEY_FILE
        )
        return cls(key.encode(), settings.snapshot_link_max_days, settings.imagery_retention_days)

    @classmethod
    def ephemeral(cls) -> SnapshotLinks:
        """A key of this process's own: links nobody else can check (for tests that open none)."""
        return cls(secrets.token_bytes(32))

    def signature(self, snapshot_pk: int, variant: Variant, expires_s: int) -> str:
        """The hex HMAC-SHA256 of what the link grants."""
        message = f"gridwatch-snapshot:{snapshot_pk}:{variant.value}:{expires_s}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def check(
        self, snapshot_pk: int, variant: Variant, expires_s: int, sig: str, now_s: int
    ) -> None:
        """Return if the link opens this image now, else raise ``LinkRefused``."""
        if variant not in SIGNABLE:
            raise LinkRefused(f"the {variant.value} image is never served through a link")
        expected = self.signature(snapshot_pk, variant, expires_s)
        # Checked before the expiry, so that a forged link learns nothing from the answer.
        if not hmac.compare_digest(expected.encode(), sig.encode()):
            raise LinkRefused("this link's signature is not valid for this image")
        if expires_s <= now_s:
            raise LinkRefused("this link has expired: open the alert again for a new one")

    def expires_s(self, row: Snapshot, retention_days: int, now_ms: int) -> int:
        """When the frame's retention ends, or the longest a link may live from now."""
        end_ms = row.at_ms + retention_days * DAY_S * 1000
        return min(end_ms // 1000, now_ms // 1000 + self.max_days * DAY_S)

    def url(self, base_url: str, snapshot_pk: int, variant: Variant, expires_s: int) -> str:
        """The absolute link to one image of a snapshot."""
        query = urlencode(
            {"expires": expires_s, "sig": self.signature(snapshot_pk, variant, expires_s)}
        )
        return f"{base_url.rstrip('/')}/api/v1/snapshots/{snapshot_pk}/{variant.value}.jpg?{query}"

    def link(
        self, session: Session, base_url: str, row: Snapshot, variant: Variant, now_ms: int
    ) -> str:
        """The link to one image of a stored (or reserved) snapshot row, valid while it is kept."""
        community = session.get(Community, row.community_id)
        days = community_retention_days(
            community.settings if community is not None else None, self.retention_days
        )
        return self.url(base_url, row.id, variant, self.expires_s(row, days, now_ms))


def community_retention_days(settings: Mapping[str, object] | None, default_days: int) -> int:
    """A community's ``settings.imagery.retention_days`` as the imagery service enforces it."""
    imagery = (settings or {}).get("imagery")
    days = imagery.get("retention_days") if isinstance(imagery, Mapping) else None
    return days if isinstance(days, int) and days > 0 else default_days


def development_key(path: Path) -> str:
    """The key kept at ``path``, made on first use; two processes starting together agree."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(secrets.token_hex(32))
        try:
            os.link(staged, path)  # atomic, and refused if another process was first
        except FileExistsError:
            pass
        finally:
            staged.unlink()
    return path.read_text(encoding="utf-8").strip()
