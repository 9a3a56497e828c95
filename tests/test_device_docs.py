"""Each kind's README names everything its code defines, so docs cannot drift from code."""

from __future__ import annotations

from pathlib import Path

import pytest

from devices import KINDS
from devices.kind import DeviceKind
from devices.points import CMD_ACK_MEASUREMENT, SNAPSHOT_MEASUREMENT, STATUS_MEASUREMENT
from ingest.decode import Reason

DEVICES_DIR = Path(__file__).parent.parent / "devices"


def _names(kind: DeviceKind) -> set[str]:
    """Every name a reader of the kind's README must find there."""
    events = getattr(kind.events, "__args__", (kind.events,))
    return {
        *kind.telemetry.__struct_fields__,
        *kind.event_names(),
        *(field for event in events for field in event.__struct_fields__),
        *kind.commands,
        *(arg for args in kind.commands.values() for arg in args.__struct_fields__),
        *kind.attributes.__struct_fields__,
        "community",
        "device_id",
        "event",
        *kind.tag_keys,
        *kind.event_tag_fields,
        kind.measurement,
        kind.measurement_event,
        STATUS_MEASUREMENT,
        CMD_ACK_MEASUREMENT,
    }


@pytest.mark.parametrize("name", sorted(KINDS))
def test_kind_readme_names_every_field_event_command_attribute_tag_and_measurement(
    name: str,
) -> None:
    readme = DEVICES_DIR / name / "README.md"
    assert readme.is_file(), f"{name} has no README.md"
    text = readme.read_text(encoding="utf-8")
    # Names must appear as code (`name`), so "open" in prose does not count for the event.
    missing = sorted(n for n in _names(KINDS[name]) if f"`{n}`" not in text)
    assert not missing, f"devices/{name}/README.md does not mention {missing}"


def test_contract_readme_names_every_kind_measurement_and_rejection_reason() -> None:
    text = (DEVICES_DIR / "README.md").read_text(encoding="utf-8")
    names = {
        *KINDS,
        STATUS_MEASUREMENT,
        CMD_ACK_MEASUREMENT,
        SNAPSHOT_MEASUREMENT,
        *(reason.value for reason in Reason),
    }
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, f"devices/README.md does not mention {missing}"
