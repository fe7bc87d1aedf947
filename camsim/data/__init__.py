"""Camera positions from Korean public open data (see README.md here for provenance and attribution)."""
