"""Vendor and firmware profiles as data (TOML), installed with the package; see README.md here."""
