"""``gridwatch dashboards push`` against a small HTTP server standing in for Grafana's API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner

from dashboards.build import dashboards
from dashboards.push import FOLDER_TITLE, FOLDER_UID
from gridwatch import cli
from gridwatch.settings import get_settings

TOKEN = "glsa_test-token"


class FakeGrafana(ThreadingHTTPServer):
    """Answers the three calls push makes, and records every request."""

    def __init__(self, folder_exists: bool) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.folder_exists = folder_exists
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeGrafana

    def _record(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append((self.command, self.path, dict(self.headers), body))
        return body

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._record()
        if self.path == f"/api/folders/{FOLDER_UID}" and self.server.folder_exists:
            self._answer(200, {"uid": FOLDER_UID, "title": FOLDER_TITLE})
        else:
            self._answer(404, {"message": "folder not found"})

    def do_POST(self) -> None:
        body = self._record()
        if self.path == "/api/folders":
            self.server.folder_exists = True
            self._answer(200, {"uid": body["uid"], "title": body["title"]})
        elif self.path == "/api/dashboards/db":
            self._answer(200, {"status": "success", "uid": body["dashboard"]["uid"]})
        else:
            self._answer(404, {"message": "not found"})

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads the recorded requests instead."""


def serve(folder_exists: bool) -> Iterator[FakeGrafana]:
    server = FakeGrafana(folder_exists)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture()
def grafana() -> Iterator[FakeGrafana]:
    yield from serve(folder_exists=False)


def run_push(monkeypatch: pytest.MonkeyPatch, url: str, *args: str) -> str:
    monkeypatch.setenv("GW_GRAFANA_URL", url)
    monkeypatch.setenv("GW_GRAFANA_TOKEN", TOKEN)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli.app, ["dashboards", "push", *args])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return result.output


def test_push_creates_the_folder_and_overwrites_every_dashboard(
    grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = run_push(monkeypatch, grafana.url)
    expected = dashboards()
    calls = [(method, path) for method, path, _, _ in grafana.requests]
    assert calls == [
        ("GET", f"/api/folders/{FOLDER_UID}"),
        ("POST", "/api/folders"),
        *[("POST", "/api/dashboards/db")] * len(expected),
    ]
    assert all(h["Authorization"] == f"Bearer {TOKEN}" for _, _, h, _ in grafana.requests)
    assert grafana.requests[1][3] == {"title": FOLDER_TITLE, "uid": FOLDER_UID}
    uploads = [body for _, path, _, body in grafana.requests if path == "/api/dashboards/db"]
    assert [u["dashboard"] for u in uploads] == list(expected.values())
    assert all(u["folderUid"] == FOLDER_UID and u["overwrite"] is True for u in uploads)
    assert output.split() == [w for d in expected.values() for w in ("pushed", d["uid"])]


def test_push_into_an_existing_folder_with_another_datasource(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for server in serve(folder_exists=True):
        run_push(monkeypatch, server.url, "--datasource-uid", "their-influx")
        assert ("POST", "/api/folders") not in [(m, p) for m, p, _, _ in server.requests]
        uploads = [body for _, path, _, body in server.requests if path == "/api/dashboards/db"]
        text = json.dumps(uploads)
        assert "gridwatch-influxdb" not in text and '"uid": "their-influx"' in text


def test_push_without_a_grafana_url_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GW_GRAFANA_URL", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli.app, ["dashboards", "push"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code != 0 and "GW_GRAFANA_URL" in result.output
