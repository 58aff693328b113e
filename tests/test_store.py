"""The DuckDB store: migrations on blank and old files, idempotent writes, one writer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from slamkit.errors import StoreError, StoreLockedError
from slamkit.store import MIGRATIONS, Store
from slamkit.store.migrations import m001_core


def test_blank_store_gets_every_migration(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as st:
        assert st.migrations() == sorted(m.__name__ for m in MIGRATIONS)
        tables = set(st.df("SELECT table_name FROM information_schema.tables")["table_name"])
    expected = {"models", "tasks", "items", "reference_outputs", "runs", "generations"}
    assert expected | {"scores", "judgments", "human_judgments", "selections"} <= tables


def test_old_store_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    db = duckdb.connect(str(path))  # a store written by a version that had only m001
    db.execute("CREATE TABLE _slamkit_migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
    m001_core(db)
    db.execute("INSERT INTO _slamkit_migrations VALUES ('m001_core', now())")
    db.execute("INSERT INTO tasks (task_id, template) VALUES ('t', '{q}')")
    db.close()
    with Store(path) as st:
        assert "m002_quality" in st.migrations() and st.count("tasks") == 1
        assert st.count("scores") == 0
    with Store(path) as st:  # reopening applies nothing twice
        assert st.migrate() == []


def test_inserts_are_idempotent(store: Store) -> None:
    row = {"task_id": "t", "template": "{q}", "description": "d"}
    assert store.insert("tasks", row) is True
    assert store.insert("tasks", row) is False
    assert store.insert_many("tasks", [row, {**row, "task_id": "u"}]) == 1
    assert store.existing("tasks", "task_id", ["t", "u", "v"]) == {"t", "u"}


def test_second_writer_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.duckdb"
    with Store(path) as st:
        st.insert("tasks", {"task_id": "t", "template": "{q}"})
        code = (
            "import sys\nfrom slamkit.store import Store\nfrom slamkit.errors import "
            "StoreLockedError\ntry:\n    Store(sys.argv[1])\nexcept StoreLockedError as e:\n"
            "    print(e); sys.exit(3)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 3, out.stderr
        assert str(path) in out.stdout and "one writing process" in out.stdout
    with Store(path) as st:  # nothing was damaged
        assert st.count("tasks") == 1


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "notes.duckdb"
    bad.write_text("not a database")
    with pytest.raises(StoreError, match="notes.duckdb"):
        Store(bad)


def test_locked_error_is_a_store_error() -> None:
    assert issubclass(StoreLockedError, StoreError)


def _gen(key: str, **extra: object) -> dict[str, object]:
    row: dict[str, object] = {"gen_key": key, "run_id": "r", "model_id": "m", "task_id": "t"}
    row.update(item_id="i", sample_index=0, seed=0, sampling={"temperature": 0.0})
    row.update(text=None, error=None)
    row.update(extra)
    return row


def test_write_replaces_error_rows_atomically(store: Store) -> None:
    assert store.write("generations", [_gen("bad", error="boom"), _gen("ok", text="fine")]) == 2
    retry = [_gen("bad", text="now fine"), _gen("ok", text="other")]
    assert store.write("generations", retry, replace_errors_of="gen_key") == 1
    rows = dict(store.rows("SELECT gen_key, coalesce(text, error) FROM generations"))
    assert rows == {"bad": "now fine", "ok": "fine"}  # error row replaced, good row kept
    # a failing write (NOT NULL violated in its second row) leaves nothing behind: the
    # error row it would have replaced is still there and no row of it was written
    store.write("generations", [_gen("bad2", error="boom")])
    broken = [_gen("bad2", text="retry"), _gen("new", run_id=None)]
    with pytest.raises(duckdb.Error):
        store.write("generations", broken, replace_errors_of="gen_key")
    rows = dict(store.rows("SELECT gen_key, coalesce(text, error) FROM generations"))
    assert rows == {"bad": "now fine", "ok": "fine", "bad2": "boom"}
    assert store.count("generations") == 3  # and the store still takes writes
    assert store.insert("generations", _gen("new", text="x")) is True


def test_a_failing_write_raises_its_own_error_not_a_secondary_one(store: Store) -> None:
    """The NOT NULL violation itself, not "transaction is aborted" from the cleanup."""
    store.write("generations", [_gen("kept", text="x")])
    with pytest.raises(duckdb.ConstraintException, match="NOT NULL"):
        store.write("generations", [_gen("a", text="y"), _gen("b", run_id=None)])
    with pytest.raises(duckdb.ConstraintException, match="NOT NULL"):
        with store.transaction() as db:
            db.execute("INSERT INTO tasks (task_id, template) VALUES ('t', '{q}')")
            db.execute("INSERT INTO tasks (task_id, template) VALUES ('u', NULL)")
    with pytest.raises(duckdb.ConstraintException, match="NOT NULL"):
        with store.transaction() as db:  # cleanup that runs after the failure, as jobs do
            try:
                db.execute("INSERT INTO tasks (task_id, template) VALUES ('v', NULL)")
            finally:
                db.execute("SELECT 1")  # fails: "transaction is aborted" (hides the cause)
    assert store.rows("SELECT gen_key FROM generations") == [("kept",)]
    assert store.count("tasks") == 0  # the first insert of the block was rolled back too


def test_a_failing_migration_is_rolled_back_and_reported_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import slamkit.store.db as db_module

    path = tmp_path / "s.duckdb"
    with Store(path) as st:
        st.insert("tasks", {"task_id": "t", "template": "{q}"})

    def m004_broken(db: duckdb.DuckDBPyConnection) -> None:
        db.execute("CREATE TABLE half_done (x INTEGER)")
        db.execute("ALTER TABLE no_such_table ADD COLUMN y INTEGER")

    monkeypatch.setattr(db_module, "MIGRATIONS", [*MIGRATIONS, m004_broken])
    with pytest.raises(StoreError) as err:
        Store(path)
    msg = str(err.value)
    assert msg.startswith(f"Migration m004_broken failed on {path}: Catalog Error")
    assert "rollback" not in msg.lower() and "aborted" not in msg.lower()
    monkeypatch.undo()
    with Store(path) as st:  # rolled back: no half-made table, not recorded, rows kept
        assert st.migrations() == sorted(m.__name__ for m in MIGRATIONS)
        assert st.count("tasks") == 1
        assert not st.rows("SELECT 1 FROM duckdb_tables() WHERE table_name = 'half_done'")
