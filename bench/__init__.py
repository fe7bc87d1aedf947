"""Benchmarks: each module measures its anchor in the same run and ends with one ratio line."""
