"""The package version, on the ground floor: every room may import it without importing the rest."""

__version__ = "0.1.0"
