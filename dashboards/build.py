"""The six dashboards, in menu order, and writing them as the committed JSON files.

Each device kind contributes its own board from ``devices/<kind>/panels.py`` (a
module with ``board() -> Board``): adding a kind to ``devices.KINDS`` with that
module adds its dashboard, and tests/test_dashboards.py fails for a kind without one.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from dashboards import overview, system
from dashboards.board import Board, render, to_json
from devices import KINDS

GENERATED = Path(__file__).resolve().parent / "generated"


def kind_board(kind: str) -> Board:
    """The board of one device kind, from its ``devices/<kind>/panels.py``."""
    module = importlib.import_module(f"devices.{kind}.panels")
    board: Board = module.board()
    return board


def boards() -> list[Board]:
    """Every board: the overview, one per kind, the system board."""
    return [overview.board(), *(kind_board(name) for name in KINDS), system.board()]


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard as Grafana JSON, by file name (``<uid>.json``)."""
    all_boards = boards()
    return {f"{board.uid}.json": render(board, all_boards) for board in all_boards}


def write(directory: Path = GENERATED) -> list[Path]:
    """(Re)write the JSON files, removing any that no board makes any more."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = dashboards()
    for stale in directory.glob("*.json"):
        if stale.name not in wanted:
            stale.unlink()
    written = []
    for name, dashboard in wanted.items():
        path = directory / name
        path.write_text(to_json(dashboard), encoding="utf-8")
        written.append(path)
    return written
