"""The DuckDB store: one file, the single source of truth for slamkit.

``Store`` is the only way into the database: its one transactional writer
(:meth:`Store.write`), the tidy readers of :mod:`slamkit.store.readers`, the per-variant
aggregates of :mod:`slamkit.store.aggregates` and what the jobs read and write
(:mod:`slamkit.store.jobs`). No module outside this package writes SQL.
"""

from slamkit.store import aggregates, readers
from slamkit.store.db import Store, open_store
from slamkit.store.migrations import MIGRATIONS
from slamkit.store.readers import Selection

__all__ = ["MIGRATIONS", "Selection", "Store", "aggregates", "open_store", "readers"]
