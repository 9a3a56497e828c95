"""dashboards: Grafana dashboards as code (see README.md; not built yet)."""
