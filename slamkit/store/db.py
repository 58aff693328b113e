"""Open a slamkit store: a DuckDB file with migrations applied on open."""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from slamkit import __version__
from slamkit.errors import (
    StoreDamagedError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreReadOnlyError,
    StoreVersionError,
)
from slamkit.store.migrations import MIGRATIONS

#: DuckDB's memory limit on analysis connections (read-only or short-lived): a summary
#: joins a million scores to a million generations; past this DuckDB partitions the join
#: (and spills to disk) instead of holding it all, which keeps a notebook's footprint small
ANALYSIS_MEMORY_LIMIT = "256MB"

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
        self._verified = False
        self._verifies = not (read_only or short_lived)
        if short_lived and self.path == ":memory:":
            raise StoreError("A short-lived store needs a file path (':memory:' would vanish).")
        if self.path != ":memory:":
            folder = Path(self.path).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._explain(exc, "creating its folder", "nothing was written") or (
                    StoreError(
                        f"cannot create the folder {folder} for the store {self.path} ({exc}): "
                        "choose another store path."
                    )
                ) from None
        with self._explained("opening it", "nothing was written"):
            db = self._open()
        if short_lived:
            db.close()
        else:
            self._db = db

    def _open(self) -> duckdb.DuckDBPyConnection:
        """Connect; on the first open of this object check the file (every block read
        once, see :meth:`_verify`) and its migrations; migrate unless read-only."""
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
            raise self._bad_file(exc, "opening it") from None
        except duckdb.Error as exc:
            raise self._bad_file(exc, "opening it") from None
        try:
            try:
                self._check_version(db)
                # jobs (a held store opened for writing) check every block before they
                # write; analysis opens (read-only, short-lived) find damage when a read
                # touches it, without paying a full scan on every widget click
                if self._verifies and not self._verified and self.path != ":memory:":
                    self._verify(db)
                    self._verified = True
            except duckdb.Error as exc:  # plain reads failed: the file is bad
                raise self._bad_file(exc, "reading it") from exc
            if not self.read_only:
                self._migrate(db)
            if not self._verifies:  # analysis: bound DuckDB's memory (it spills beyond)
                db.execute(f"SET memory_limit = '{ANALYSIS_MEMORY_LIMIT}'")
        except BaseException:
            db.close()
            raise
        return db

    def _check_version(self, db: duckdb.DuckDBPyConnection) -> None:
        """Refuse a store that records migrations this slamkit does not know."""
        has = db.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND table_name = '_slamkit_migrations'"
        ).fetchall()[0][0]
        if not has:
            return
        known = {m.__name__ for m in MIGRATIONS}
        done = [r[0] for r in db.execute("SELECT name FROM _slamkit_migrations").fetchall()]
        unknown = sorted(n for n in done if n not in known)
        if unknown:
            raise StoreVersionError(
                f"{self.path} was written by a newer slamkit (migrations "
                f"{', '.join(unknown)} unknown to slamkit {__version__}): upgrade slamkit "
                "(pip install -U slamkit) or use a copy of the store made with this version; "
                "nothing was written."
            )

    @staticmethod
    def _verify(db: duckdb.DuckDBPyConnection) -> None:
        """Read every value of every table once, so a damaged block is found now (DuckDB
        checks a block's checksum when it reads it) and not by a later, unrelated query.
        One to three seconds for a million generations (the texts dominate), milliseconds
        for the default store; once per held, writable :class:`Store` object (read-only and
        short-lived stores skip it: a damaged block fails the read that touches it)."""
        tables = db.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'main' ORDER BY table_name"
        ).fetchall()
        bar = db.execute("SELECT current_setting('enable_progress_bar')").fetchall()[0][0]
        db.execute("SET enable_progress_bar = false")  # a check, not a job to watch
        try:
            for (table,) in tables:
                quoted = table.replace('"', '""')
                db.execute(f'SELECT bit_xor(hash(COLUMNS(*))) FROM "{quoted}"').fetchall()
        finally:
            if bar:
                db.execute("SET enable_progress_bar = true")

    # -- failures explained: the one place DuckDB and OS errors become StoreErrors ---------
    @contextmanager
    def _explained(self, doing: str, outcome: str) -> Iterator[None]:
        """Turn an IO failure (damaged file, disk full, read-only location) raised in the
        block into a :class:`StoreError` that says so first and what to do. Other DuckDB
        errors (a constraint, a bad query) pass unchanged. ``doing`` ("writing
        generations") and ``outcome`` ("this write was rolled back") go into the message."""
        try:
            yield
        except StoreError:
            raise
        except duckdb.Error as exc:
            cause = _primary(exc)
            err = self._explain(cause, doing, outcome)
            if err is not None:
                raise err from cause
            if cause is not exc:
                raise cause from None
            raise

    def _explain(self, exc: BaseException, doing: str, outcome: str) -> StoreError | None:
        return explain(self.path, exc, doing, outcome)

    def _bad_file(self, exc: BaseException, doing: str) -> StoreError:
        """For an error from opening or scanning the file: explained, else damaged."""
        return self._explain(exc, doing, "nothing was written") or StoreDamagedError(
            _damaged(self.path, exc, "nothing was written")
        )

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The live connection (held mode), or one opened for this block (short-lived).

        For modules inside ``slamkit.store`` only: everything else calls a reader or
        :meth:`write`.
        """
        with self._connection("using it", "nothing was written") as db:
            yield db

    @contextmanager
    def _connection(self, doing: str, outcome: str) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._explained(doing, outcome):
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
            db, self._db = self._db, None
            with self._explained("closing it", "the rows committed before are kept"):
                db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # an error is on its way out: it is the cause, not a failing close after it
            self.close()
        except (StoreError, duckdb.Error):
            pass

    # -- schema ----------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Apply every migration not yet recorded; return the names applied."""
        with self.connection() as db:
            return self._migrate(db)

    def _migrate(self, db: duckdb.DuckDBPyConnection) -> list[str]:
        with self._explained("migrating it to this slamkit", "the migration was rolled back"):
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
                try:
                    with _atomic(db):
                        migration(db)
                        db.execute("INSERT INTO _slamkit_migrations (name) VALUES (?)", [name])
                except duckdb.Error as exc:
                    err = self._explain(exc, f"applying migration {name}", "it was rolled back")
                    if err is not None:
                        raise err from exc
                    raise StoreError(f"Migration {name} failed on {self.path}: {exc}") from exc
                applied.append(name)
        return applied

    def migrations(self) -> list[str]:
        return list(self.df("SELECT name FROM _slamkit_migrations ORDER BY name")["name"])

    # -- reading (for slamkit.store's readers) -------------------------------------
    def df(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run a query and return a DataFrame (used by :mod:`slamkit.store` readers)."""
        with self._connection("reading it", "nothing was written") as db:
            return db.execute(sql, params or []).df()

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a query and return its rows as tuples."""
        with self._connection("reading it", "nothing was written") as db:
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
        with self._connection("reading it", "nothing was written") as db:
            db.register("_slamkit_keys", probe)
            try:
                rows = db.execute(
                    f"SELECT t.{key} FROM {table} t JOIN _slamkit_keys p ON t.{key} = p.k{cond}"
                ).fetchall()
            finally:
                _unregister(db, "_slamkit_keys")
        return {r[0] for r in rows}

    # -- writing: the one transactional writer ---------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All writes in the block land together, or none do (for ``slamkit.store``)."""
        with self._transaction("writing to it") as db:
            yield db

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[duckdb.DuckDBPyConnection]:
        outcome = "the rows stored before are kept and this write was rolled back"
        with self._connection(doing, outcome) as db, _atomic(db):
            yield db

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
        outcome = "the rows stored before are kept and this write was rolled back"
        with self._connection(f"writing {table}", outcome) as db:
            # registered outside the transaction: unregistering inside a failed one would
            # raise "transaction is aborted" over the real error
            db.register("_slamkit_rows", frame)
            try:
                with _atomic(db):
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
                _unregister(db, "_slamkit_rows")
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


#: DuckDB / OS messages (lower case) and what they mean
_NO_SPACE = ("no space left", "disk quota exceeded", "disk full")
_READ_ONLY = ("read-only file system", "permission denied", "operation not permitted")
_DAMAGED = (
    "corrupt database file", "could not read enough bytes", "not a valid duckdb database",
    "checksum", "failed to deserialize",
)  # fmt: skip
_NEWER_FORMAT = ("trying to read a database file with version number",)
_OS_ERRNO = {
    errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}  # fmt: skip


def explain(path: str, exc: BaseException, doing: str, outcome: str) -> StoreError | None:
    """The one translation of an IO failure on the store at ``path`` into a one-line
    :class:`StoreError`, cause first and what to do; None when ``exc`` is not one (a
    constraint violation, a bad query: the caller re-raises it as it is).

    ``doing`` says what slamkit was doing ("writing generations"), ``outcome`` what became
    of it ("this write was rolled back").
    """
    if isinstance(exc, OSError) and not isinstance(exc, duckdb.Error):
        text = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
        low = _OS_ERRNO.get(exc.errno or 0, "") + " " + text.lower()
    else:
        text = str(exc)
        low = text.lower()
    cause = _one_line(text)
    invalidated = isinstance(exc, duckdb.FatalException) or "has been invalidated" in low
    restart = (
        " (DuckDB closed this connection after the failure: close the store, or restart the "
        "notebook kernel, and open it again)"
        if invalidated
        else ""
    )
    if any(s in low for s in _NO_SPACE):
        return StoreFullError(
            f"No space left on the device holding {path} while {doing}: free space and rerun"
            f"{restart}; {outcome} (DuckDB: {cause})."
        )
    if "attached in read-only mode" in low:
        return StoreReadOnlyError(
            f"cannot write {path}: this store was opened with read_only=True — open it "
            f"without read_only to write (no other process may hold it then); {outcome}."
        )
    hit = next((s for s in _READ_ONLY if s in low), None)
    if hit is not None:
        where = f"{hit}: {exc.filename}" if isinstance(exc, OSError) else f"{hit}; DuckDB: {cause}"
        fix = (
            "copy it somewhere writable and point --store (or the store path) at the copy, "
            "or open it with read_only=True for analysis only"
            if Path(path).exists()
            else "choose a store path in a writable folder (--store PATH)"
        )
        return StoreReadOnlyError(f"cannot write {path}: read-only ({where}) — {fix}; {outcome}.")
    if any(s in low for s in _NEWER_FORMAT):
        return StoreVersionError(
            f"{path} was written by a newer DuckDB (DuckDB: {cause}): upgrade slamkit and "
            "duckdb (pip install -U slamkit duckdb) or use a copy of the store made with this "
            f"version; {outcome}."
        )
    if any(s in low for s in _DAMAGED):
        return StoreDamagedError(_damaged(path, exc, outcome))
    if invalidated:
        return StoreError(
            f"{path} cannot be used in this process any more after an earlier failure "
            f"(DuckDB: {cause}): close the store, or restart the notebook kernel, and open it "
            f"again; {outcome}."
        )
    return None


def _primary(exc: duckdb.Error) -> duckdb.Error:
    """The error that started it: a statement run after a failure inside a transaction
    (an ``unregister`` in a ``finally``, say) fails with "transaction is aborted", which
    would hide the real cause."""
    seen = exc
    for _ in range(10):
        ctx = seen.__context__
        if "transaction is aborted" not in str(seen).lower() or not isinstance(ctx, duckdb.Error):
            break
        seen = ctx
    return seen


def _damaged(path: str, exc: BaseException, outcome: str) -> str:
    cause = _one_line(str(exc))
    if "not a valid duckdb database" in cause.lower():
        what, check = (
            "is not a DuckDB database, or is damaged",
            "check the path; if it is the store, ",
        )
    else:
        what, check = "is damaged", ""
    return (
        f"{path} {what} (DuckDB: {cause}): {check}restore it from a copy, or move it away "
        "and rebuild it (`make run` for the default store, or the notebooks and slamkit "
        f"commands that filled it); {outcome}."
    )


def _one_line(text: str) -> str:
    """DuckDB's message on one line; for an invalidated database, the original error."""
    _, sep, original = text.partition("Original error:")
    if sep:
        text = original.strip().strip('"')
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " ".join(lines).rstrip(".!") if lines else text


@contextmanager
def _atomic(db: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN ... COMMIT; on any failure (a failed COMMIT included) ROLLBACK, quietly."""
    db.execute("BEGIN TRANSACTION")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)  # a failed COMMIT has already ended it: never a second error
        raise


def _unregister(db: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop a registered view; a connection that DuckDB gave up on has none to drop."""
    try:
        db.unregister(name)
    except duckdb.Error:
        pass


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
