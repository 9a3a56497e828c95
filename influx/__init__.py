"""InfluxDB through its v1-compatible HTTP API: line-protocol encoding, /write and /query."""
