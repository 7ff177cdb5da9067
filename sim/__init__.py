"""alliance-spiral: an agent-based model of trust and openness spirals in strategic alliances."""

from .provenance import package_version

__version__ = package_version()  # from the package metadata (setuptools-scm)
