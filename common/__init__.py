"""What agent, collector and camsim share besides the wire contract: settings loading (TOML and
environment), JSON logs with redaction, the MQTT client builder and its settings, the S3 gateway client and
progress reports."""
