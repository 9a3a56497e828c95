"""Golden cases of the alert rules (YAML) and the harness that runs them."""
