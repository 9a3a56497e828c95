"""Signed snapshot links: what they grant, how long, and the key's origin in each mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from gridwatch.settings import MissingSecretError, Settings
from imagery.files import Variant
from imagery.links import DAY_S, DEV_KEY_FILE, LinkRefused, SnapshotLinks, community_retention_days
from imagery.models import Snapshot

LINKS = SnapshotLinks(b"k" * 32, max_days=30, retention_days=30)
NOW_S = 1_795_195_860
AT_MS = (NOW_S - 3600) * 1000


def signed(variant: Variant = Variant.PRIVACY, expires_s: int = NOW_S + 60) -> tuple[int, str]:
    return expires_s, LINKS.signature(7, variant, expires_s)


def test_a_signed_link_opens_its_image_until_it_expires() -> None:
    expires, sig = signed()
    LINKS.check(7, Variant.PRIVACY, expires, sig, NOW_S)
    with pytest.raises(LinkRefused, match="expired"):
        LINKS.check(7, Variant.PRIVACY, expires, sig, expires)


@pytest.mark.parametrize(
    ("pk", "variant", "expires_delta", "key"),
    [
        (8, Variant.PRIVACY, 0, b"k" * 32),  # another snapshot
        (7, Variant.THUMBNAIL, 0, b"k" * 32),  # another variant
        (7, Variant.PRIVACY, 3600, b"k" * 32),  # a later expiry
        (7, Variant.PRIVACY, 0, b"x" * 32),  # another key
    ],
)
def test_anything_changed_in_a_link_is_refused(
    pk: int, variant: Variant, expires_delta: int, key: bytes
) -> None:
    expires, sig = signed()
    checker = SnapshotLinks(key)
    with pytest.raises(LinkRefused, match="signature"):
        checker.check(pk, variant, expires + expires_delta, sig, NOW_S)


def test_the_original_is_never_opened_by_a_link() -> None:
    expires, sig = signed(Variant.ORIGINAL)
    with pytest.raises(LinkRefused, match="original"):
        LINKS.check(7, Variant.ORIGINAL, expires, sig, NOW_S)


def test_a_link_lives_until_the_image_is_deleted_or_the_longest_allowed() -> None:
    row = Snapshot(id=7, community_id="zjxc", at_ms=AT_MS)
    now_ms = NOW_S * 1000
    assert LINKS.expires_s(row, 30, now_ms) == AT_MS // 1000 + 30 * DAY_S
    assert LINKS.expires_s(row, 7, now_ms) == AT_MS // 1000 + 7 * DAY_S
    short = SnapshotLinks(LINKS.key, max_days=1)
    assert short.expires_s(row, 30, now_ms) == NOW_S + DAY_S


def test_the_url_carries_what_check_wants() -> None:
    url = LINKS.url("https://gw.example.cn/", 7, Variant.THUMBNAIL, NOW_S + 60)
    parts = urlsplit(url)
    assert parts.path == "/api/v1/snapshots/7/thumbnail.jpg"
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    LINKS.check(7, Variant.THUMBNAIL, int(query["expires"]), query["sig"], NOW_S)


def test_retention_is_the_communitys_as_imagery_enforces_it() -> None:
    assert community_retention_days({"imagery": {"retention_days": 14}}, 30) == 14
    unset: list[dict[str, object] | None] = [None, {}, {"imagery": {}}, {"imagery": {"x": 1}}]
    for settings in [*unset, {"imagery": {"retention_days": "14"}}]:
        assert community_retention_days(settings, 30) == 30


def test_production_refuses_to_sign_without_a_key(tmp_path: Path) -> None:
    settings = Settings(env="production", state_dir=tmp_path)
    with pytest.raises(MissingSecretError, match="GW_SNAPSHOT_LINK_KEY"):
        SnapshotLinks.from_settings(settings)
    with pytest.raises(ValueError, match="at least 32"):
        Settings(snapshot_link_key="short")
    assert not (tmp_path / DEV_KEY_FILE).exists()


def test_development_processes_share_one_key_in_the_state_dir(tmp_path: Path) -> None:
    settings = Settings(env="development", state_dir=tmp_path)
    first = SnapshotLinks.from_settings(settings)
    assert SnapshotLinks.from_settings(settings).key == first.key
    assert (tmp_path / DEV_KEY_FILE).stat().st_mode & 0o777 == 0o600
    configured = Settings(env="production", state_dir=tmp_path, snapshot_link_key="z" * 40)
    assert SnapshotLinks.from_settings(configured).key == b"z" * 40


def test_the_module_needs_no_opencv() -> None:
    code = "import sys, imagery.links; sys.exit('cv2' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
