"""The line-protocol encoder, proven against the real influxd: what we write is what we read."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from influx.client import InfluxClient, quote_ident
from influx.lineprotocol import (
    INT64_MAX,
    INT64_MIN,
    Point,
    UnencodableError,
    encode_batch,
    encode_field_value,
    encode_point,
)

pytestmark = pytest.mark.integration

# Printable text of any script, with the characters line protocol treats specially.
SPECIALS = st.sampled_from([",", "=", " ", '"', "'", "\\", "标", "é", "\t", "#"])
TEXT = st.text(
    st.one_of(st.characters(blacklist_categories=("Cs", "Cc"), max_codepoint=0x2FFFF), SPECIALS),
    min_size=1,
    max_size=20,
)
NAME = TEXT.filter(lambda s: not s.endswith("\\") and s.strip() == s and s != "time")
FIELD_VALUE = st.one_of(
    st.booleans(),
    st.integers(INT64_MIN, INT64_MAX),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(max_size=40).filter(lambda s: "\x00" not in s),
)
_unique = itertools.count()


def _read_back(influx: InfluxClient, measurement: str) -> dict[str, object]:
    series = influx.query(f"SELECT * FROM {quote_ident(measurement)}")
    assert len(series) == 1 and len(series[0].values) == 1, series
    return series[0].records()[0]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    measurement=NAME,
    tags=st.dictionaries(NAME, NAME, max_size=3),
    fields=st.dictionaries(NAME, FIELD_VALUE, min_size=1, max_size=3),
)
def test_points_round_trip_through_influxd(
    influx_db: InfluxClient,
    measurement: str,
    tags: dict[str, str],
    fields: dict[str, object],
) -> None:
    fields = {k: v for k, v in fields.items() if k not in tags}
    if not fields or measurement.startswith("#"):  # '#' makes a comment: refused, tested below
        return
    # A unique measurement per example: a field's type is fixed per shard once written.
    name = f"{measurement}_{next(_unique)}"
    point = Point(name, tags, fields, 1_700_000_000_123)  # type: ignore[arg-type]
    influx_db.write(encode_batch([point]))
    row = _read_back(influx_db, name)
    assert row["time"] == point.time_ms
    for key, tag in tags.items():
        assert row[key] == tag
    for key, value in fields.items():
        got = row[key]
        if isinstance(value, float):
            assert isinstance(got, int | float) and math.isclose(got, value, rel_tol=1e-15)
        else:
            assert got == value, (key, value, got)


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "", "ends\\"])
def test_unrepresentable_names_are_refused_not_mangled(bad: str) -> None:
    with pytest.raises(UnencodableError):
        encode_point(Point("m", {"t": bad}, {"f": 1}, 1))


def test_a_measurement_that_would_read_as_a_comment_is_refused() -> None:
    with pytest.raises(UnencodableError):
        encode_point(Point("#m", {}, {"f": 1}, 1))


@pytest.mark.parametrize("bad", [math.nan, math.inf, 2**63, -(2**63) - 1])
def test_unrepresentable_numbers_are_refused(bad: float) -> None:
    with pytest.raises(UnencodableError):
        encode_field_value(bad)


def test_newlines_in_string_fields_stay_inside_the_point(influx_db: InfluxClient) -> None:
    """A string field may carry a newline; it must not split the batch into two points."""
    points = [
        Point("notes", {"d": "1"}, {"text": "line one\nline two"}, 1_700_000_000_000),
        Point("notes", {"d": "2"}, {"text": "plain"}, 1_700_000_000_000),
    ]
    influx_db.write(encode_batch(points))
    rows = influx_db.query('SELECT "text" FROM "notes" GROUP BY "d"')
    assert sorted(r.values[0][1] for r in rows) == ["line one\nline two", "plain"]
