"""dashboards: Grafana dashboards as code (see README.md).

The SDK's classic dashboard modules (and its v2beta1 ones, which the panel builders
import) warn at import that ``dashboardv2`` is preferred. The v2 schema needs
Grafana's dashboard-v2 feature flags and is not what file provisioning reads, so
gridwatch builds classic dashboards on purpose: those modules are imported once here
with that one warning silenced.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", "Prefer using dashboardv2.Dashboard instead.", DeprecationWarning
    )
    import grafana_foundation_sdk.builders.dashboard
    import grafana_foundation_sdk.builders.dashboardv2beta1
    import grafana_foundation_sdk.models.dashboard
    import grafana_foundation_sdk.models.dashboardv2beta1  # noqa: F401
