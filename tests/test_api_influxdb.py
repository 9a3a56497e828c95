"""The API's InfluxDB reader: queries and errors on the real influxd, HTTP details on a fake one.

The fake server speaks just enough HTTP/1.1 to give what a real server gives only
by chance: a chunked answer, and an idle keep-alive connection closed by the server
(the reader must send the query again on a new connection).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from api.influxdb import InfluxReader
from influx.client import InfluxClient, InfluxRejected, InfluxUnavailable
from influx.lineprotocol import Point, encode_batch
from stack.servers import Influxd, free_port

SERIES = {"name": "door", "columns": ["time", "seq"], "values": [[1, 2]]}
ANSWER = {"results": [{"statement_id": 0, "series": [SERIES]}]}

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def fake_influxd(handle: Handler) -> AsyncIterator[str]:
    """A server on loopback running ``handle`` per connection; yields its URL."""
    handlers: list[asyncio.Task[None]] = []

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]  # inside a task
        await handle(reader, writer)

    server = await asyncio.start_server(run, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()
        await asyncio.gather(*handlers)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """The head of one request (a GET has no body)."""
    return await reader.readuntil(b"\r\n\r\n")


@pytest.mark.integration
def test_queries_the_real_influxd(influx_db: InfluxClient, influxd: Influxd) -> None:
    tags = {"community": "zjxc", "device_id": "zjxc-door-b01-u1"}
    influx_db.write(encode_batch([Point("door", tags, {"seq": 7, "locked": True}, 1_000)]))

    async def run() -> None:
        reader = InfluxReader(influxd.url, influx_db.database, timeout=5)
        try:
            assert await reader.ping()
            for _ in range(3):  # the same keep-alive connection, again and again
                (series,) = await reader.query('SELECT "seq", "locked" FROM "door"')
                assert series.tags == {}
                assert series.records() == [{"time": 1_000, "seq": 7, "locked": True}]
            grouped = await reader.query('SELECT "seq" FROM "door" GROUP BY "device_id"')
            assert grouped[0].tags == {"device_id": "zjxc-door-b01-u1"}
            with pytest.raises(InfluxRejected):
                await reader.query('SELECT "seq" FROM "door" WHERE')
            other = InfluxReader(influxd.url, "no_such_db", timeout=5)
            with pytest.raises(InfluxRejected, match="database not found"):
                await other.query('SELECT * FROM "door"')
            await other.aclose()
        finally:
            await reader.aclose()

    asyncio.run(run())


def test_nothing_listening_is_unavailable() -> None:
    async def run() -> None:
        reader = InfluxReader(f"http://127.0.0.1:{free_port()}", "db", timeout=2)
        assert not await reader.ping()
        with pytest.raises(InfluxUnavailable, match="cannot reach"):
            await reader.query("SELECT 1")

    asyncio.run(run())


def test_a_chunked_answer_and_a_connection_closed_while_idle() -> None:
    body = json.dumps(ANSWER).encode()
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Each connection answers one query, in two chunks, then is closed while idle.
        nonlocal connections
        connections += 1
        await read_request(reader)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        writer.write(head + b"Transfer-Encoding: chunked\r\n\r\n")
        for part in (body[:10], body[10:]):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def run() -> None:
        async with fake_influxd(handle) as url:
            reader = InfluxReader(url, "db", timeout=5)
            for _ in range(3):
                (series,) = await reader.query("SELECT 1")
                assert series.values == [[1, 2]]
                await asyncio.sleep(0.05)  # the server's close arrives while idle
            await reader.aclose()

    asyncio.run(run())
    assert connections == 3


def test_a_query_lost_on_a_reused_connection_is_sent_again() -> None:
    body = json.dumps(ANSWER).encode()
    answered = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The first connection answers once, then drops the next query unanswered,
        # as a server ending an idle connection just as a query arrives does.
        nonlocal answered
        await read_request(reader)
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        writer.write(head + body)
        await writer.drain()
        answered += 1
        if answered == 1:
            await read_request(reader)
        writer.close()

    async def run() -> None:
        async with fake_influxd(handle) as url:
            reader = InfluxReader(url, "db", timeout=5)
            for _ in range(2):
                assert (await reader.query("SELECT 1"))[0].values == [[1, 2]]
            await reader.aclose()

    asyncio.run(run())
    assert answered == 2


@pytest.mark.parametrize(
    ("status", "error"), [(500, InfluxUnavailable), (429, InfluxUnavailable), (401, InfluxRejected)]
)
def test_http_errors_map_to_the_clients_errors(status: int, error: type[Exception]) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        body = b'{"error":"no"}'
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    async def run() -> None:
        async with fake_influxd(handle) as url:
            with pytest.raises(error, match="no"):
                await InfluxReader(url, "db", timeout=5).query("SELECT 1")

    asyncio.run(run())


def test_a_slow_server_times_out() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # no answer: wait until the client gives up and closes
        writer.close()

    async def run() -> None:
        async with fake_influxd(handle) as url:
            with pytest.raises(InfluxUnavailable, match="timeout"):
                await InfluxReader(url, "db", timeout=0.3).query("SELECT 1")

    asyncio.run(run())


def test_credentials_go_as_basic_auth_and_the_database_in_the_query() -> None:
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await read_request(reader))
        body = json.dumps(ANSWER).encode()
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    async def run() -> None:
        async with fake_influxd(handle) as url:
            reader = InfluxReader(url + "/influx/", "my db", username="u", password="p", timeout=5)
            await reader.query('SELECT "a" FROM "b"')

    asyncio.run(run())
    (head,) = heads
    assert head.startswith(b"GET /influx/query?q=SELECT%20%22a%22%20FROM%20%22b%22&db=my%20db&")
    assert b"Authorization: Basic dTpw\r\n" in head
