"""ingest: MQTT messages in, checked against the contract and registry, points out to InfluxDB."""
