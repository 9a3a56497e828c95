"""The MQTT connection every service opens: URL parsing and a configured paho client."""
