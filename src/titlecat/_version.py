"""titlecat's version: one place for the package, its bundles and pyproject.toml (dynamic version)."""

__version__ = "0.1.0"
