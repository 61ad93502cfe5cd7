"""The installed package's version, readable without importing torch (benches that time fresh processes)."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    """The installed `rewriting` version, as every output records it; "unknown" outside an install."""
    try:
        return version("rewriting")
    except PackageNotFoundError:
        return "unknown"
