"""api: the FastAPI service: registry, device state, telemetry, alerts, commands.

Nothing else imports it.
"""
