"""The demo community 张家新村 (zjxc), shipped as a community file."""

from pathlib import Path

DEMO_COMMUNITY_FILE: Path = Path(__file__).with_name("zjxc.yaml")

__all__ = ["DEMO_COMMUNITY_FILE"]
