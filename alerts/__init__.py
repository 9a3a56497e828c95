"""Alerts: the rule engine, the alert lifecycle and store, routing and notifications (README.md)."""

# Each kind's rules.py builds on alerts.rule, and alerts.rule on devices.contract:
# loading the kinds first makes that cycle resolve whichever package is imported first.
import devices  # noqa: F401
