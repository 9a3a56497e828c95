"""A small InfluxDB HTTP client for the v1-compatible API (``/write`` and ``/query``).

Errors form a tree so callers can react to the failure, not the status code:

    InfluxError
    ├── InfluxUnavailable   retry later (refused, timeout, 429, 5xx); carries retry_after
    └── InfluxRejected      the request was refused (4xx); the same body will fail again
        └── BatchTooLarge     413: split the batch and send the halves
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx

JsonValue = Any


class InfluxError(Exception):
    """Base of every InfluxDB client error."""


class InfluxUnavailable(InfluxError):
    """InfluxDB could not take the request now; the same request may succeed later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InfluxRejected(InfluxError):
    """InfluxDB refused the request (4xx); ``status`` and InfluxDB's own ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class BatchTooLarge(InfluxRejected):
    """413: the body exceeds the server's limit."""


@dataclass(frozen=True, slots=True)
class Series:
    """One series of a query result: name, tags, column names and rows."""

    name: str
    columns: list[str]
    values: list[list[JsonValue]]
    tags: dict[str, str] = field(default_factory=dict)

    def records(self) -> list[dict[str, JsonValue]]:
        """Rows as dicts keyed by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.values]


RETENTION_POLICY = "gridwatch"


def quote_ident(name: str) -> str:
    """Quote an InfluxQL identifier (database, measurement, tag key)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_literal(value: str) -> str:
    """Quote an InfluxQL string literal, so no value can end the string early."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _retry_after(response: httpx.Response) -> float | None:
    header = response.headers.get("Retry-After")
    try:
        return float(header) if header is not None else None
    except ValueError:
        return None


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    return str(body.get("error", body)) if isinstance(body, dict) else str(body)


class InfluxClient:
    """Writes line protocol and runs InfluxQL; one keep-alive connection pool."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str = "",
        password: str = "",
        timeout: float = 10.0,
    ) -> None:
        auth = (username, password) if (username or password) else None
        self.database = database
        self._http = httpx.Client(base_url=url.rstrip("/"), auth=auth, timeout=timeout)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return str(self._http.base_url).rstrip("/")

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> InfluxClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise InfluxUnavailable(f"timeout: {exc}") from exc
        except httpx.TransportError as exc:
            raise InfluxUnavailable(f"cannot reach InfluxDB: {exc}") from exc
        status = response.status_code
        if status < 300:
            return response
        text = _error_text(response)
        if status == 413:
            raise BatchTooLarge(status, text)
        if status == 429 or status >= 500:
            raise InfluxUnavailable(f"{status}: {text}", _retry_after(response))
        raise InfluxRejected(status, text)

    def ping(self) -> bool:
        """True if InfluxDB answers /ping."""
        try:
            self._send("GET", "/ping")
        except InfluxError:
            return False
        return True

    def write(self, body: bytes, precision: str = "ms") -> None:
        """POST a line-protocol body to /write (ms precision unless told otherwise)."""
        self._send(
            "POST",
            "/write",
            params={"db": self.database, "precision": precision},
            content=body,
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )

    def query(self, influxql: str, *, database: str | None = None) -> list[Series]:
        """Run one InfluxQL statement; times come back as ms since the epoch."""
        params = {"q": influxql, "db": database or self.database, "epoch": "ms"}
        method = "GET" if influxql.lstrip().upper().startswith(("SELECT", "SHOW")) else "POST"
        response = self._send(method, "/query", params=params)
        results = response.json().get("results", [])
        series: list[Series] = []
        for result in results:
            if "error" in result:
                raise InfluxRejected(400, result["error"])
            for raw in result.get("series", []):
                series.append(
                    Series(
                        name=raw.get("name", ""),
                        columns=raw.get("columns", []),
                        values=raw.get("values", []),
                        tags=raw.get("tags", {}) or {},
                    )
                )
        return series

    def check_database(self) -> None:
        """Raise ``InfluxRejected`` unless the database exists and this account may read it.

        For servers whose database the operator makes (a 2.x bucket with its DBRP
        mapping, a 3.x database): a query is what the v1 API of all three answers.
        """
        self.query("SHOW MEASUREMENTS")

    def ensure_database(self, retention: str) -> None:
        """Create the database and make its default retention policy ``retention`` (1.x only).

        InfluxDB 2.x maps the database to a bucket (create the bucket and a DBRP
        mapping, see the README); 3.x creates the database on first write.
        """
        db = quote_ident(self.database)
        self.query(f"CREATE DATABASE {db}")
        spec = f"ON {db} DURATION {_duration(retention)} REPLICATION 1 DEFAULT"
        # 1.6 answers CREATE for an existing policy with success and keeps the old
        # duration, so look first and ALTER what exists.
        policies = self.query(f"SHOW RETENTION POLICIES ON {db}")
        names = {row[0] for s in policies for row in s.values}
        verb = "ALTER" if RETENTION_POLICY in names else "CREATE"
        self.query(f"{verb} RETENTION POLICY {quote_ident(RETENTION_POLICY)} {spec}")


_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w)$|^INF$")


def _duration(value: str) -> str:
    if not _DURATION.match(value):
        raise ValueError(f"not an InfluxQL duration: {value!r} (e.g. 400d, 52w, INF)")
    return value
