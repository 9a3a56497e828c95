"""The registry on SQLite and on a real PostgreSQL: migrations, the importer, the loaders."""

from __future__ import annotations

import copy
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, event, func, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

import registry
from registry.db import alembic_config, make_engine, make_sessionmaker, migrate
from registry.demo import DEMO_COMMUNITY_FILE
from registry.demo.generate import render
from registry.importer import RegistryImportError, import_document, import_file
from registry.models import Base, Building, Device, GridWorker, Household
from registry.records import get_device, load_communities, load_devices

DEMO_KINDS = {"door": 112, "streetlight": 169, "water_meter": 60, "patrol_robot": 1}


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of this test's own: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'registry.db'}"
        return
    server = request.getfixturevalue("postgres")
    name = f"registry_{uuid.uuid4().hex[:12]}"
    yield server.create_database(name)
    admin = make_engine(server.url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on the migrated database."""
    migrate(db_url)
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions on the migrated database."""
    return make_sessionmaker(engine)


@pytest.fixture
def demo(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """Sessions on a database holding the demo community."""
    with sessions.begin() as session:
        import_file(session, DEMO_COMMUNITY_FILE)
    return sessions


def small_document(community: str = "tiny") -> dict[str, Any]:
    """A community with one of each placement: a door, a meter, a lamp."""
    return {
        "community": {"id": community, "name": "小小区", "lat": 36.8, "lon": 118.0},
        "managers": [{"name": "孙主任", "phone": 13800000000}],
        "grids": [
            {
                "id": "g1",
                "name": "第一网格",
                "workers": [
                    {
                        "name": "李秀梅",
                        "phone": "13800000001",
                        "channels": [{"type": "sms", "url": "http://127.0.0.1:9/sms"}],
                    }
                ],
            }
        ],
        "buildings": [
            {
                "number": 3,
                "grid": "g1",
                "lat": 36.8001,
                "lon": 118.0002,
                "units": [
                    {
                        "number": 2,
                        "households": 12,
                        "rooms": [
                            {
                                "room": 501,
                                "resident": {"name": "王秀英", "phone": "13800000002"},
                                "emergency_contact": {"name": "王伟", "phone": "13800000003"},
                                "care": {"no_use_hours": 10},
                            }
                        ],
                    }
                ],
            }
        ],
        "devices": [
            {"id": f"{community}-door", "kind": "door", "building": 3, "unit": 2},
            {"id": f"{community}-wm", "kind": "water_meter", "building": 3, "unit": 2, "room": 501},
            {
                "id": f"{community}-lamp",
                "kind": "streetlight",
                "lat": 36.8,
                "lon": 118.0,
                "attributes": {"circuit": "A", "rated_power_w": 80},
            },
        ],
    }


def rejection(sessions: sessionmaker[Session], document: dict[str, Any]) -> str:
    """Import ``document``, which must be refused; the error's text."""
    with sessions() as session, pytest.raises(RegistryImportError) as caught:
        import_document(session, document)
    return str(caught.value)


def row_counts(session: Session) -> dict[str, int]:
    """Rows in every registry table."""
    return {
        table.name: session.scalar(select(func.count()).select_from(table)) or 0
        for table in Base.metadata.sorted_tables
    }


# --- migrations ---------------------------------------------------------------------


def test_migrate_creates_the_models_schema_and_twice_is_a_no_op(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the migrations are found from the package, not the cwd
    migrate(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            context = MigrationContext.configure(connection)
            assert compare_metadata(context, Base.metadata) == []
        migrate(db_url)
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == tables
            head = ScriptDirectory.from_config(alembic_config()).get_current_head()
            assert MigrationContext.configure(connection).get_current_heads() == (head,)
    finally:
        engine.dispose()
    assert tables == {table.name for table in Base.metadata.sorted_tables} | {"alembic_version"}


def test_migrations_downgrade_to_nothing(engine: Engine) -> None:
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) == {"alembic_version"}


def test_make_engine_creates_the_sqlite_directory_and_enforces_foreign_keys(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'a' / 'b' / 'registry.db'}")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()
    assert (tmp_path / "a" / "b" / "registry.db").is_file()


# --- the demo community -------------------------------------------------------------


def test_demo_file_is_what_the_generator_writes() -> None:
    assert DEMO_COMMUNITY_FILE.read_text(encoding="utf-8") == render()


def test_demo_community_imports_with_its_published_size(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        summary = import_file(session, DEMO_COMMUNITY_FILE)
    assert (summary.community, summary.units, summary.households) == ("zjxc", 112, 60)
    assert 3 <= summary.grids <= 4
    with sessions() as session:
        records = load_devices(session)
        communities = load_communities(session)
    assert Counter(record.kind for record in records) == DEMO_KINDS
    assert [(c.id, c.name, c.timezone) for c in communities] == [
        ("zjxc", "张家新村", "Asia/Shanghai")
    ]
    assert all(record.lat is not None and record.lon is not None for record in records)


def test_demo_door_and_meter_say_where_they_are(demo: sessionmaker[Session]) -> None:
    with demo() as session:
        door = get_device(session, "zjxc-door-b03-u2")
        meters = load_devices(session, "zjxc")
    assert door is not None
    assert (door.community, door.kind, door.place) == ("zjxc", "door", "3号楼2单元")
    assert dict(door.tags) == {"building": "3", "unit": "2"}
    assert door.attributes["unit_households"] in (10, 12)
    meter = next(record for record in meters if record.kind == "water_meter")
    tags = meter.tags
    assert meter.place == f"{tags['building']}号楼{tags['unit']}单元{tags['room']}"
    assert meter.device_id == f"zjxc-wm-b{int(tags['building']):02d}-u{tags['unit']}-{tags['room']}"
    assert meter.attributes["care"]["watched"] is True


def test_demo_lamps_and_robot(demo: sessionmaker[Session]) -> None:
    with demo() as session:
        lamp = get_device(session, "zjxc-lamp-a012")
        robot = get_device(session, "zjxc-robot-1")
    assert lamp is not None
    assert robot is not None
    assert (lamp.place, dict(lamp.tags)) == ("A回路 12号灯", {"circuit": "A"})
    assert 60 <= lamp.attributes["rated_power_w"] <= 100
    (route,) = robot.attributes["routes"]
    assert (route["id"], route["start"], route["end"]) == ("night-a", "22:00", "05:30")
    assert [cp["id"] for cp in route["checkpoints"]] == [f"cp-{n:02d}" for n in range(1, 13)]


def test_demo_sends_nothing_anywhere_real(demo: sessionmaker[Session]) -> None:
    with demo() as session:
        channels = [c for w in session.scalars(select(GridWorker)) for c in w.channels]
        roles = Counter(w.role for w in session.scalars(select(GridWorker)))
    assert channels
    assert all(channel["url"].startswith("http://127.0.0.1:9/") for channel in channels)
    assert roles["manager"] == 1


def test_no_personal_data_in_device_records(demo: sessionmaker[Session]) -> None:
    with demo() as session:
        households = session.scalars(select(Household)).all()
        records = load_devices(session)
    personal = {h.resident_name for h in households} | {h.contact_phone for h in households}
    assert None not in personal
    exposed = repr([(r.place, r.tags, r.attributes) for r in records])
    assert not [value for value in personal if str(value) in exposed]


# --- loading ------------------------------------------------------------------------


def test_load_devices_is_one_query_and_filters_by_community(
    demo: sessionmaker[Session], engine: Engine
) -> None:
    with demo.begin() as session:
        import_document(session, small_document("other"))
    statements: list[str] = []

    def count(*args: Any) -> None:
        if args[2].startswith("SELECT"):
            statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        with demo() as session:
            everything = load_devices(session)
            other = load_devices(session, "other")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == 2
    assert len(everything) == sum(DEMO_KINDS.values()) + 3
    assert [r.device_id for r in other] == ["other-door", "other-lamp", "other-wm"]


def test_small_community_records(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        import_document(session, small_document())
    with sessions() as session:
        meter = get_device(session, "tiny-wm")
        lamp = get_device(session, "tiny-lamp")
        assert get_device(session, "nowhere") is None
    assert meter is not None
    assert lamp is not None
    assert meter.place == "3号楼2单元501"
    assert dict(meter.tags) == {"building": "3", "unit": "2", "room": "501"}
    assert dict(meter.attributes) == {
        "unit_households": 12,
        "care": {"watched": True, "no_use_hours": 10},
    }
    assert (meter.lat, meter.lon) == (36.8001, 118.0002)
    # Without a place of its own, a lamp is named by its kind and id.
    assert lamp.place == "路灯 tiny-lamp"


# --- re-import ----------------------------------------------------------------------


def test_reimport_is_idempotent(demo: sessionmaker[Session]) -> None:
    with demo() as session:
        before = row_counts(session)
        ids = sorted(session.execute(select(Building.number, Building.id)).all())
        created = dict(session.execute(select(Device.device_id, Device.created_at)).all())
        records = load_devices(session)
    with demo.begin() as session:
        import_file(session, DEMO_COMMUNITY_FILE)
    with demo() as session:
        assert row_counts(session) == before
        assert sorted(session.execute(select(Building.number, Building.id)).all()) == ids
        assert dict(session.execute(select(Device.device_id, Device.created_at)).all()) == created
        assert load_devices(session) == records


def test_reimport_replaces_the_community_content(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        import_document(session, small_document())
    changed = small_document()
    unit = changed["buildings"][0]["units"][0]
    unit["households"] = 14
    unit["rooms"] = []
    changed["devices"] = [changed["devices"][0], changed["devices"][2]]
    changed["devices"][1]["attributes"]["rated_power_w"] = 60
    changed["grids"][0]["workers"] = []
    with sessions.begin() as session:
        summary = import_document(session, changed)
    assert (summary.devices, summary.households, summary.workers) == (2, 0, 1)
    with sessions() as session:
        counts = row_counts(session)
        door = get_device(session, "tiny-door")
        lamp = get_device(session, "tiny-lamp")
    assert (counts["households"], counts["devices"], counts["grid_workers"]) == (0, 2, 1)
    assert door is not None
    assert door.attributes["unit_households"] == 14
    assert lamp is not None
    assert lamp.attributes["rated_power_w"] == 60


def test_reimport_moves_devices_to_new_buildings_and_grids(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        import_document(session, small_document())
    moved = small_document()
    moved["grids"] = [{"id": "g2", "name": "第二网格"}]
    moved["buildings"][0] |= {"number": 4, "grid": "g2"}
    for device in moved["devices"][:2]:
        device["building"] = 4
    with sessions.begin() as session:
        import_document(session, moved)
    with sessions() as session:
        places = {record.device_id: record.place for record in load_devices(session)}
        counts = row_counts(session)
    assert places == {
        "tiny-door": "4号楼2单元",
        "tiny-wm": "4号楼2单元501",
        "tiny-lamp": "路灯 tiny-lamp",
    }
    assert (counts["grids"], counts["buildings"], counts["grid_workers"]) == (1, 1, 1)


# --- rejections ---------------------------------------------------------------------


def test_rejects_an_unknown_kind(sessions: sessionmaker[Session]) -> None:
    document = small_document()
    document["devices"][2]["kind"] = "toaster"
    message = rejection(sessions, document)
    assert "devices[2].kind: unknown kind 'toaster'" in message
    assert "streetlight" in message


def test_rejects_attributes_that_fail_the_kinds_schema(sessions: sessionmaker[Session]) -> None:
    document = small_document()
    document["devices"][2]["attributes"]["rated_power_w"] = "bright"
    document["devices"][0]["attributes"] = {"colour": "red"}
    message = rejection(sessions, document)
    assert "devices[2].attributes.rated_power_w: Expected `float`, got `str`" in message
    assert "devices[0].attributes: Object contains unknown field `colour`" in message


def test_rejects_a_dangling_unit_or_room(sessions: sessionmaker[Session]) -> None:
    document = small_document()
    document["devices"][0]["unit"] = 9
    document["devices"][1]["room"] = 502
    message = rejection(sessions, document)
    assert "devices[0].unit: building '3' has no unit '9'" in message
    assert "devices[1].room: no room '502' in building '3' unit '2'" in message


def test_rejects_a_device_without_the_placement_its_kind_needs(
    sessions: sessionmaker[Session],
) -> None:
    document = small_document()
    del document["devices"][0]["unit"]
    assert "devices[0].unit: a door is placed at a unit" in rejection(sessions, document)


def test_rejects_a_device_id_taken_by_another_community(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        import_document(session, small_document("first"))
    document = small_document("second")
    document["devices"][0]["id"] = "first-door"
    message = rejection(sessions, document)
    assert "devices[0].id: 'first-door' is already registered in community 'first'" in message


def test_rejects_shape_errors_with_their_path(sessions: sessionmaker[Session]) -> None:
    document = small_document()
    document["buildings"][0]["units"][0]["households"] = -1
    document["grids"][0]["workers"][0]["channels"][0]["type"] = "pager"
    document["buildings"][0]["colour"] = "red"
    document["community"]["timezone"] = "Mars/Olympus"
    message = rejection(sessions, document)
    assert "buildings[0].units[0].households: Input should be greater than or equal to 0" in message
    assert "grids[0].workers[0].channels[0]: Input tag 'pager'" in message
    assert "buildings[0].colour: Extra inputs are not permitted" in message
    assert "community.timezone: Value error, unknown time zone 'Mars/Olympus'" in message


def test_rejects_duplicates_and_unknown_grids(sessions: sessionmaker[Session]) -> None:
    document = small_document()
    document["devices"].append(copy.deepcopy(document["devices"][0]))
    document["buildings"][0]["grid"] = "g9"
    message = rejection(sessions, document)
    assert "devices[3].id: 'tiny-door' is already used at devices[0].id" in message
    assert "buildings[0].grid: no grid 'g9' in grids" in message


def test_rejects_malformed_yaml_before_touching_the_database(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("community:\n  id: zjxc\n  name: [张家新村\n", encoding="utf-8")
    twice = tmp_path / "twice.yaml"
    twice.write_text("community: {}\ngrids: []\ncommunity: {}\n", encoding="utf-8")
    unbound = Session()
    with pytest.raises(RegistryImportError, match=r"(?s)broken\.yaml: not valid YAML.*line 4"):
        import_file(unbound, broken)
    with pytest.raises(RegistryImportError, match="key 'community' given twice"):
        import_file(unbound, twice)


def test_a_refused_import_leaves_the_community_as_it_was(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        import_document(session, small_document())
        before = row_counts(session)
    document = small_document()
    document["devices"] = []
    document["buildings"][0]["grid"] = "g9"
    rejection(sessions, document)
    with sessions() as session:
        assert row_counts(session) == before


def test_readme_example_imports(sessions: sessionmaker[Session]) -> None:
    readme = Path(registry.__file__).with_name("README.md").read_text(encoding="utf-8")
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    with sessions.begin() as session:
        summary = import_document(session, yaml.safe_load(example))
    assert (summary.community, summary.devices, summary.households) == ("zjxc", 4, 1)
