"""The DuckDB store: one file, the single source of truth for slamkit."""

from slamkit.store.db import Store, open_store
from slamkit.store.migrations import MIGRATIONS

__all__ = ["MIGRATIONS", "Store", "open_store"]
