"""Upload the dashboards to a Grafana that already runs (``gridwatch dashboards push``).

For control rooms with a Grafana of their own: the dashboards go into one folder,
replacing earlier versions, and their queries are pointed at that Grafana's own
InfluxDB data source when its uid is not the one gridwatch provisions.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError

from dashboards.build import dashboards
from dashboards.widgets import DATASOURCE_UID

# The same folder as deploy/grafana/provisioning/dashboards/gridwatch.yaml.
FOLDER_UID = "gridwatch"
FOLDER_TITLE = "gridwatch 社区监控"
NOT_FOUND = 404


def with_datasource(dashboard: dict[str, Any], uid: str) -> dict[str, Any]:
    """The dashboard with every reference to gridwatch's data source pointed at ``uid``."""
    text = json.dumps(dashboard, ensure_ascii=False)
    text = text.replace(json.dumps(DATASOURCE_UID), json.dumps(uid, ensure_ascii=False))
    result: dict[str, Any] = json.loads(text)
    return result


# grafana-client's API methods carry no annotations: hence the no-untyped-call ignores.


def ensure_folder(grafana: GrafanaApi) -> None:
    """Create the dashboards' folder unless it exists."""
    try:
        grafana.folder.get_folder(FOLDER_UID)  # type: ignore[no-untyped-call]
    except GrafanaClientError as exc:
        if exc.status_code != NOT_FOUND:
            raise
        grafana.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)  # type: ignore[no-untyped-call]


def push(url: str, token: str, *, datasource_uid: str = DATASOURCE_UID) -> list[str]:
    """Upload every dashboard (overwriting); the uids pushed, in order."""
    grafana = GrafanaApi.from_url(url, credential=token or None)
    ensure_folder(grafana)
    pushed = []
    for dashboard in dashboards().values():
        grafana.dashboard.update_dashboard(
            {
                "dashboard": with_datasource(dashboard, datasource_uid),
                "folderUid": FOLDER_UID,
                "overwrite": True,
                "message": "gridwatch dashboards push",
            }
        )
        pushed.append(str(dashboard["uid"]))
    return pushed
