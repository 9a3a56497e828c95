"""simulators: whole communities of simulated devices, publishing the contract over MQTT."""
