"""ingest: MQTT messages in, validated against the contract and the registry, points out to InfluxDB."""
