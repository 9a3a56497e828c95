"""Read the registry as the alerts service needs it: devices, communities and their settings.

A community's alert settings are the ``alerts`` section of its ``settings``
(registry file: ``community.settings.alerts``): rule ids mapping to parameter
overrides, plus ``escalate_after_min``.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from alerts.engine import Directory
from alerts.site import Site
from registry.models import Community
from registry.records import load_communities, load_devices

SETTINGS_SECTION = "alerts"


def load_directory(session: Session) -> Directory:
    """Every device and community, with each community's alert settings."""
    settings = {
        id_: value for id_, value in session.execute(select(Community.id, Community.settings))
    }
    sites = {
        community.id: Site(community, (settings.get(community.id) or {}).get(SETTINGS_SECTION, {}))
        for community in load_communities(session)
    }
    devices = {record.device_id: record for record in load_devices(session)}
    return Directory(devices, sites)


def escalation_overrides(directory: Directory) -> Mapping[str, int]:
    """Communities whose settings set ``escalate_after_min``, in ms."""
    return {
        site.id: int(float(site.settings["escalate_after_min"]) * 60_000)
        for site in directory.sites.values()
        if isinstance(site.settings.get("escalate_after_min"), int | float)
    }
