"""Open a slamkit store: a DuckDB file with migrations applied on open."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from slamkit.errors import StoreError, StoreLockedError
from slamkit.store.migrations import MIGRATIONS

_LOCK_RE = re.compile(r"PID (\d+)")


class Store:
    """A connection to one store file. Use as a context manager or call ``close()``.

    >>> with Store(":memory:") as st:
    ...     st.df("select count(*) as n from models")["n"][0]
    0
    """

    def __init__(self, path: str | Path = ":memory:", read_only: bool = False) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = duckdb.connect(self.path, read_only=read_only)
        except duckdb.IOException as exc:
            msg = str(exc)
            if "lock" in msg.lower():
                pid = _LOCK_RE.search(msg)
                who = f"process {pid.group(1)}" if pid else "another process"
                raise StoreLockedError(
                    f"The store {self.path} is open for writing in {who}. DuckDB allows one "
                    "writing process at a time: wait for that run to finish, or stop it "
                    "(its finished rows are kept), or close the notebook kernel that holds it."
                ) from None
            raise StoreError(f"Cannot open the store {self.path}: {msg}") from None
        except duckdb.Error as exc:
            raise StoreError(
                f"{self.path} is not a readable slamkit store ({exc}). Point --store at a "
                "new path, or move this file away."
            ) from None
        if not read_only:
            self.migrate()

    # -- lifecycle -----------------------------------------------------------
    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ----------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Apply every migration not yet recorded; return the names applied."""
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS _slamkit_migrations "
            "(name VARCHAR PRIMARY KEY, applied_at TIMESTAMP DEFAULT current_timestamp)"
        )
        done = {r[0] for r in self.db.execute("SELECT name FROM _slamkit_migrations").fetchall()}
        applied = []
        for migration in MIGRATIONS:
            name = migration.__name__
            if name in done:
                continue
            self.db.execute("BEGIN TRANSACTION")
            try:
                migration(self.db)
                self.db.execute("INSERT INTO _slamkit_migrations (name) VALUES (?)", [name])
                self.db.execute("COMMIT")
            except Exception as exc:
                self.db.execute("ROLLBACK")
                raise StoreError(f"Migration {name} failed on {self.path}: {exc}") from exc
            applied.append(name)
        return applied

    def migrations(self) -> list[str]:
        rows = self.db.execute("SELECT name FROM _slamkit_migrations ORDER BY name").fetchall()
        return [r[0] for r in rows]

    # -- helpers ---------------------------------------------------------------
    def df(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run a query and return a DataFrame."""
        return self.db.execute(sql, params or []).df()

    def insert(
        self,
        table: str,
        row: dict[str, Any],
        on_conflict: str = "DO NOTHING",
    ) -> bool:
        """Insert one row (dicts/lists become JSON). Return True when a row was written."""
        return self.insert_many(table, [row], on_conflict) > 0

    def insert_many(
        self, table: str, rows: Iterable[dict[str, Any]], on_conflict: str = "DO NOTHING"
    ) -> int:
        """Insert rows in one transaction; ``ON CONFLICT DO NOTHING`` makes it idempotent."""
        rows = list(rows)
        if not rows:
            return 0
        cols = list(rows[0])
        for i, row in enumerate(rows):
            if list(row) != cols:
                raise StoreError(
                    f"insert into {table}: row {i + 1} has columns {sorted(row)}, "
                    f"expected {sorted(cols)} like the first row."
                )
        # One set-based statement: much faster than a statement per row. dtype=object keeps
        # ints with None as ints (no NaN) and lets DuckDB cast to the table's types.
        frame = pd.DataFrame(
            [[to_db(r[c]) for c in cols] for r in rows], columns=cols, dtype=object
        )
        col_sql = ", ".join(f'"{c}"' for c in cols)
        before = self.count(table)
        self.db.execute("BEGIN TRANSACTION")
        try:
            self.db.register("_slamkit_rows", frame)
            self.db.execute(
                f"INSERT INTO {table} ({col_sql}) SELECT {col_sql} FROM _slamkit_rows "
                f"ON CONFLICT {on_conflict}"
            )
            self.db.execute("COMMIT")
        except Exception:
            self.db.execute("ROLLBACK")
            raise
        finally:
            self.db.unregister("_slamkit_rows")
        return self.count(table) - before

    def count(self, table: str, where: str = "", params: Sequence[Any] | None = None) -> int:
        sql = f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else "")
        row = self.db.execute(sql, params or []).fetchone()
        return int(row[0]) if row else 0

    def existing(self, table: str, key: str, keys: Iterable[str]) -> set[str]:
        """Return which of ``keys`` are already stored in ``table.key``."""
        keys = list(keys)
        if not keys:
            return set()
        rows = self.db.execute(
            f"SELECT {key} FROM {table} WHERE {key} IN (SELECT unnest(?))", [keys]
        ).fetchall()
        return {r[0] for r in rows}


def to_db(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def open_store(path: str | Path = ":memory:", read_only: bool = False) -> Store:
    """Open (creating and migrating if needed) the store at ``path``."""
    return Store(path, read_only=read_only)
