"""Live view: segments of a camera's stream, cut at keyframes, uploaded to S3 and announced over MQTT."""
