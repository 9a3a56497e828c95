"""The device contract, held to the same behaviour for every kind (parametrized over KINDS)."""

from __future__ import annotations

import json

import pytest

from devices import KINDS
from devices.contract import Channel, TopicError, device_topic, parse_topic
from ingest.decode import Accepted, Ignored, Limits, Reason, Rejected, decode_message
from tests.contract_helpers import NOW_MS, record, sample_payloads

ALL_KINDS = sorted(KINDS)


def decode(kind: str, channel: str, payload: bytes, **kw: object) -> object:
    dev = record(kind)
    topic = f"sc/{dev.community}/{kind}/{dev.device_id}/{channel}"
    devices = {dev.device_id: dev}
    return decode_message(
        topic, payload, devices=devices, now_ms=NOW_MS + 86_400_000, limits=Limits()
    )


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        (
            "sc/zjxc/door/zjxc-door-b03-u2/telemetry",
            ("zjxc", "door", "zjxc-door-b03-u2", "telemetry"),
        ),
        ("sc/zjxc/patrol_robot/r1/snapshot/s-1", ("zjxc", "patrol_robot", "r1", "snapshot")),
    ],
)
def test_topics_parse_and_rebuild(topic: str, expected: tuple[str, str, str, str]) -> None:
    parsed = parse_topic(topic, frozenset(KINDS))
    assert (parsed.community, parsed.kind, parsed.device_id, parsed.channel.value) == expected
    assert str(parsed) == topic


@pytest.mark.parametrize(
    "topic",
    [
        "sc/zjxc/door/d1",  # no channel
        "sc/Z!/door/d1/telemetry",  # bad community slug
        "sc/zjxc/toaster/d1/telemetry",  # unknown kind
        "sc/zjxc/door/d 1/telemetry",  # space in id
        "sc/zjxc/door/" + "x" * 65 + "/telemetry",  # id too long
        "sc/zjxc/door/d1/telemetry/extra",
        "sc/zjxc/door/d1/snapshot",  # snapshot without id
        "xx/zjxc/door/d1/telemetry",
    ],
)
def test_bad_topics_are_refused(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(topic, frozenset(KINDS))


def test_topic_builder_matches_contract() -> None:
    assert device_topic("zjxc", "door", "d1", Channel.CMD) == "sc/zjxc/door/d1/cmd"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_simulated_messages_pass_the_contract(kind: str) -> None:
    """Everything a simulated device sends in a day decodes and maps to a point."""
    payloads = sample_payloads(kind)
    assert payloads, f"{kind} sent nothing in a day"
    for channel, payload in payloads:
        outcome = decode(kind, channel, payload)
        assert isinstance(outcome, Accepted), (channel, payload, outcome)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_schema_field_is_stored(kind: str) -> None:
    """The telemetry point holds every documented field except ts (None fields omitted)."""
    spec = KINDS[kind]
    channel, payload = next(p for p in sample_payloads(kind) if p[0] == "telemetry")
    outcome = decode(kind, channel, payload)
    assert isinstance(outcome, Accepted)
    sent = {k for k, v in json.loads(payload).items() if v is not None} - {"ts"}
    assert sent <= set(spec.telemetry.__struct_fields__)
    assert set(outcome.point.fields) == sent
    assert outcome.point.measurement == kind
    assert outcome.point.tags["device_id"] == record(kind).device_id


# Water meters send events only on tamper, battery or valve changes: none on a normal day.
@pytest.mark.parametrize("kind", ["door", "streetlight", "patrol_robot"])
def test_event_names_are_tags(kind: str) -> None:
    events = [p for p in sample_payloads(kind, hours=48) if p[0] == "event"]
    assert events, f"a simulated {kind} sent no event in two days"
    outcome = decode(kind, *events[0])
    assert isinstance(outcome, Accepted)
    assert outcome.point.measurement == f"{kind}_event"
    assert outcome.point.tags["event"] == json.loads(events[0][1])["event"]


def _telemetry(kind: str, **changes: object) -> bytes:
    _channel, payload = next(p for p in sample_payloads(kind) if p[0] == "telemetry")
    body = json.loads(payload)
    body.update(changes)
    return json.dumps(body).encode()


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"ts": 1, "seq":', Reason.BAD_JSON),
        (b"\xff\xfe not utf-8", Reason.BAD_JSON),
        (b"[1, 2, 3]", Reason.SCHEMA),
        (b'"just a string"', Reason.SCHEMA),
        (b"{}", Reason.SCHEMA),
        (b'{"ts": 1e400, "seq": 1}', Reason.SCHEMA),
        (b"", Reason.BAD_JSON),
        (b"NaN", Reason.BAD_JSON),
    ],
)
def test_malformed_payloads_are_rejected(kind: str, payload: bytes, reason: Reason) -> None:
    outcome = decode(kind, "telemetry", payload)
    assert isinstance(outcome, Rejected)
    assert outcome.reason is reason


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_wrong_types_and_ranges_are_rejected_with_the_field(kind: str) -> None:
    outcome = decode(kind, "telemetry", _telemetry(kind, seq="7"))
    assert isinstance(outcome, Rejected) and outcome.reason is Reason.SCHEMA
    assert "$.seq" in outcome.detail
    outcome = decode(kind, "telemetry", _telemetry(kind, seq=2**80))
    assert isinstance(outcome, Rejected) and outcome.reason is Reason.SCHEMA


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_unknown_fields_are_ignored_not_stored(kind: str) -> None:
    outcome = decode(kind, "telemetry", _telemetry(kind, evil='x" y=1', extra=1))
    assert isinstance(outcome, Accepted)
    assert "evil" not in outcome.point.fields and "extra" not in outcome.point.fields


@pytest.mark.parametrize(
    ("offset_ms", "reason"),
    [(11 * 60_000, Reason.TS_FUTURE), (-8 * 86_400_000, Reason.TS_TOO_OLD)],
)
def test_timestamps_out_of_bounds(offset_ms: int, reason: Reason) -> None:
    now = NOW_MS + 86_400_000
    outcome = decode("door", "telemetry", _telemetry("door", ts=now + offset_ms))
    assert isinstance(outcome, Rejected) and outcome.reason is reason


def test_registry_is_the_authority() -> None:
    dev = record("door")
    devices = {dev.device_id: dev}
    payload = _telemetry("door")
    kw = {"devices": devices, "now_ms": NOW_MS + 86_400_000, "limits": Limits()}
    unknown = decode_message("sc/zjxc/door/nobody/telemetry", payload, **kw)  # type: ignore[arg-type]
    other_community = decode_message(f"sc/other/door/{dev.device_id}/telemetry", payload, **kw)  # type: ignore[arg-type]
    other_kind = decode_message(f"sc/zjxc/streetlight/{dev.device_id}/telemetry", payload, **kw)  # type: ignore[arg-type]
    assert isinstance(unknown, Rejected) and unknown.reason is Reason.UNKNOWN_DEVICE
    assert (
        isinstance(other_community, Rejected) and other_community.reason is Reason.DEVICE_MISMATCH
    )
    assert isinstance(other_kind, Rejected) and other_kind.reason is Reason.DEVICE_MISMATCH


def test_oversized_payload_is_rejected_before_parsing() -> None:
    outcome = decode("door", "telemetry", b"{" + b" " * (16 * 1024) + b"}")
    assert isinstance(outcome, Rejected) and outcome.reason is Reason.TOO_LARGE


def test_commands_we_sent_are_ignored_not_rejected() -> None:
    assert isinstance(decode("door", "cmd", b"{}"), Ignored)


def test_online_status_without_ts_is_not_a_last_will() -> None:
    outcome = decode("door", "status", b'{"online": true}')
    assert isinstance(outcome, Accepted) and outcome.point.fields["will"] is False


def test_last_will_takes_arrival_time() -> None:
    outcome = decode("door", "status", b'{"online": false}')
    assert isinstance(outcome, Accepted)
    assert outcome.point.fields == {"online": False, "will": True}
    assert outcome.point.time_ms == NOW_MS + 86_400_000


@pytest.mark.parametrize(
    "hostile",
    ['a"b', "a'b", "a,b", "a b", "a=b", "a\\", "a\nb", "a\rb", "x" * 300, "' OR 1=1 --", "标签"],
)
def test_hostile_strings_in_values_never_corrupt_line_protocol(hostile: str) -> None:
    """A hostile string in a string field is refused by the schema or escaped safely."""
    payload = json.dumps(
        {"ts": NOW_MS, "seq": 3, "event": "unlock", "method": "face", "resident": hostile}
    ).encode()
    outcome = decode("door", "event", payload)
    if isinstance(outcome, Accepted):
        assert "\n" not in outcome.line
        assert outcome.line.count(" ") >= 2
    else:
        assert isinstance(outcome, Rejected) and outcome.reason is Reason.SCHEMA


def test_snapshots_only_from_kinds_that_send_them() -> None:
    assert isinstance(decode("patrol_robot", "snapshot/s-1", b"\xff\xd8jpeg"), Accepted)
    outcome = decode("door", "snapshot/s-1", b"\xff\xd8jpeg")
    assert isinstance(outcome, Rejected) and outcome.reason is Reason.BAD_TOPIC


def test_imagery_checkpoint_evidence_is_stored_with_its_source() -> None:
    body = {"ts": NOW_MS, "seq": 0, "event": "checkpoint", "checkpoint_id": "cp-07",
            "source": "imagery", "snapshot_id": "snap-1"}  # fmt: skip
    outcome = decode("patrol_robot", "event", json.dumps(body).encode())
    assert isinstance(outcome, Accepted)
    assert outcome.point.fields["source"] == "imagery"
    assert outcome.point.fields["snapshot_id"] == "snap-1"
    forged = decode("patrol_robot", "event", json.dumps({**body, "source": "robot"}).encode())
    assert isinstance(forged, Rejected)
