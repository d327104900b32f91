"""The package version, kept apart so that ``api/`` can read it without importing Pulumi."""

__version__ = "0.1.0"
