"""The README tells the truth about configuration and the two set-up commands."""

from __future__ import annotations

from pathlib import Path

from gridwatch.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented() -> None:
    missing = [
        f"GW_{name.upper()}" for name in Settings.model_fields if f"GW_{name.upper()}" not in README
    ]
    assert not missing, f"README's configuration table lacks {missing}"


def test_quick_start_is_the_two_commands() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make run" in quick_start and "make test" in quick_start
