"""The city collector: ingests what district agents report, indexes it and serves the shared platform."""

__version__ = "0.1.0"
