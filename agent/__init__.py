"""The district agent: discovers and watches a district's cameras, reports over MQTT, cuts evidence clips."""

__version__ = "0.1.0"
