"""Open a slamkit store: a DuckDB file with migrations applied on open."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from slamkit.errors import StoreError, StoreLockedError
from slamkit.store.migrations import MIGRATIONS

_LOCK_RE = re.compile(r"PID (\d+)")


class Store:
    """The one gateway into a store file. Use as a context manager or call ``close()``.

    Two modes:

    * held (default): one DuckDB connection for the life of the object — what jobs use.
    * ``short_lived=True``: no connection is held; every call opens the file, does its
      work and closes it again. For widgets that live for hours in a notebook (the human
      A/B widget): other notebooks and ``slamkit`` commands can write between clicks.

    Every write goes through :meth:`write` (one transaction, idempotent with
    ``ON CONFLICT DO NOTHING``, optionally replacing stored error rows of the same keys);
    reads go through the named readers of :mod:`slamkit.store.readers`.

    >>> with Store(":memory:") as st:
    ...     st.count("models")
    0
    """

    def __init__(
        self, path: str | Path = ":memory:", read_only: bool = False, short_lived: bool = False
    ) -> None:
        self.path = str(path)
        self.read_only = read_only
        self.short_lived = short_lived
        self._db: duckdb.DuckDBPyConnection | None = None
        if short_lived and self.path == ":memory:":
            raise StoreError("A short-lived store needs a file path (':memory:' would vanish).")
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = self._open()
        if short_lived:
            db.close()
        else:
            self._db = db

    def _open(self) -> duckdb.DuckDBPyConnection:
        try:
            db = duckdb.connect(self.path, read_only=self.read_only)
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
        if not self.read_only:
            self._migrate(db)
        return db

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The live connection (held mode), or one opened for this block (short-lived).

        For modules inside ``slamkit.store`` only: everything else calls a reader or
        :meth:`write`.
        """
        if self._db is not None:
            yield self._db
            return
        if not self.short_lived:
            raise StoreError(f"The store {self.path} is closed.")
        db = self._open()
        try:
            yield db
        finally:
            db.close()

    @property
    def db(self) -> duckdb.DuckDBPyConnection:
        """The held connection (for code inside ``slamkit.store``; not in short-lived mode)."""
        if self._db is None:
            raise StoreError(
                f"The store {self.path} holds no connection "
                f"({'short-lived mode' if self.short_lived else 'closed'})."
            )
        return self._db

    # -- lifecycle -----------------------------------------------------------
    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ----------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Apply every migration not yet recorded; return the names applied."""
        with self.connection() as db:
            return self._migrate(db)

    def _migrate(self, db: duckdb.DuckDBPyConnection) -> list[str]:
        db.execute(
            "CREATE TABLE IF NOT EXISTS _slamkit_migrations "
            "(name VARCHAR PRIMARY KEY, applied_at TIMESTAMP DEFAULT current_timestamp)"
        )
        done = {r[0] for r in db.execute("SELECT name FROM _slamkit_migrations").fetchall()}
        applied = []
        for migration in MIGRATIONS:
            name = migration.__name__
            if name in done:
                continue
            db.execute("BEGIN TRANSACTION")
            try:
                migration(db)
                db.execute("INSERT INTO _slamkit_migrations (name) VALUES (?)", [name])
                db.execute("COMMIT")
            except Exception as exc:
                db.execute("ROLLBACK")
                raise StoreError(f"Migration {name} failed on {self.path}: {exc}") from exc
            applied.append(name)
        return applied

    def migrations(self) -> list[str]:
        return list(self.df("SELECT name FROM _slamkit_migrations ORDER BY name")["name"])

    # -- reading (for slamkit.store's readers) -------------------------------------
    def df(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run a query and return a DataFrame (used by :mod:`slamkit.store` readers)."""
        with self.connection() as db:
            return db.execute(sql, params or []).df()

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a query and return its rows as tuples."""
        with self.connection() as db:
            return db.execute(sql, params or []).fetchall()

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        """The first column of the first row (None when there is no row)."""
        rows = self.rows(sql, params)
        return rows[0][0] if rows else None

    def count(self, table: str, where: str = "", params: Sequence[Any] | None = None) -> int:
        sql = f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else "")
        return int(self.scalar(sql, params) or 0)

    def existing(self, table: str, key: str, keys: Iterable[str], where: str = "") -> set[str]:
        """Return which of ``keys`` are already stored in ``table.key`` (and match ``where``).

        The keys travel as one Arrow column joined in the database: a million keys are
        checked in well under a second.
        """
        keys = list(dict.fromkeys(keys))
        if not keys:
            return set()
        probe = pa.table({"k": pa.array(keys, type=pa.string())})
        cond = f" AND ({where})" if where else ""
        with self.connection() as db:
            db.register("_slamkit_keys", probe)
            try:
                rows = db.execute(
                    f"SELECT t.{key} FROM {table} t JOIN _slamkit_keys p ON t.{key} = p.k{cond}"
                ).fetchall()
            finally:
                db.unregister("_slamkit_keys")
        return {r[0] for r in rows}

    # -- writing: the one transactional writer ---------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All writes in the block land together, or none do (for ``slamkit.store``)."""
        with self.connection() as db:
            db.execute("BEGIN TRANSACTION")
            try:
                yield db
            except BaseException:
                _rollback(db)
                raise
            db.execute("COMMIT")

    def write(
        self,
        table: str,
        rows: Iterable[dict[str, Any]],
        on_conflict: str = "DO NOTHING",
        replace_errors_of: str | None = None,
    ) -> int:
        """Insert rows in one transaction and return how many were written.

        ``ON CONFLICT DO NOTHING`` makes a write idempotent: a row whose key is stored is
        kept as it was. ``replace_errors_of="gen_key"`` (a key column) first deletes the
        stored rows with those keys whose ``error`` is set — a retried cell replaces its
        error row — in the same transaction, so a crash leaves the old row or the new one,
        never neither. Dicts and lists become JSON text.
        """
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
        with self.transaction() as db:
            db.register("_slamkit_rows", frame)
            try:
                if replace_errors_of:
                    k = replace_errors_of
                    db.execute(
                        f"DELETE FROM {table} WHERE error IS NOT NULL AND {k} IN "
                        f"(SELECT {k} FROM _slamkit_rows)"
                    )
                before = _scalar(db, f"SELECT count(*) FROM {table}")
                db.execute(
                    f"INSERT INTO {table} ({col_sql}) SELECT {col_sql} FROM _slamkit_rows "
                    f"ON CONFLICT {on_conflict}"
                )
                written = _scalar(db, f"SELECT count(*) FROM {table}") - before
            finally:
                db.unregister("_slamkit_rows")
        return written

    def insert(self, table: str, row: dict[str, Any], on_conflict: str = "DO NOTHING") -> bool:
        """Write one row (see :meth:`write`). Return True when it was written."""
        return self.write(table, [row], on_conflict) > 0

    def insert_many(
        self, table: str, rows: Iterable[dict[str, Any]], on_conflict: str = "DO NOTHING"
    ) -> int:
        """Write rows in one transaction (see :meth:`write`)."""
        return self.write(table, rows, on_conflict)


def _scalar(db: duckdb.DuckDBPyConnection, sql: str) -> int:
    rows = db.execute(sql).fetchall()  # fetchall: DuckDB 2 refuses register() beside an
    return int(rows[0][0]) if rows else 0  # unfinished result (fetchone leaves one open)


def _rollback(db: duckdb.DuckDBPyConnection) -> None:
    try:
        db.execute("ROLLBACK")
    except duckdb.Error:  # the failed statement already ended the transaction
        pass


def to_db(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def open_store(
    path: str | Path = ":memory:", read_only: bool = False, short_lived: bool = False
) -> Store:
    """Open (creating and migrating if needed) the store at ``path``."""
    return Store(path, read_only=read_only, short_lived=short_lived)
