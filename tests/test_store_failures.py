"""Store failures explained, on real files: a damaged or truncated store, a store from a
newer slamkit, a full disk, a read-only location. Each is one StoreError whose message says
the cause first and what to do, through the Python API and the CLI, and nothing stored
before is lost.

The disk-full and read-only tests mount a small tmpfs (or a read-only bind mount): they
need root and a kernel that lets the test mount; elsewhere they are skipped, saying why
(the read-only test uses ``chmod`` instead when not root).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest
from helpers import add_synthetic

from slamkit.cli import main
from slamkit.errors import (
    StoreDamagedError,
    StoreError,
    StoreFullError,
    StoreReadOnlyError,
    StoreVersionError,
)
from slamkit.store import MIGRATIONS, Store
from slamkit.store.db import explain

#: DuckDB's file layout: three 4 KiB headers, then blocks whose first 8 bytes are a checksum
HEADER = 3 * 4096
RESTORE = "restore it from a copy, or move it away and rebuild it"


def _gen(key: str, text: str = "x") -> dict[str, object]:
    return {"gen_key": key, "run_id": "run", "model_id": "m1", "task_id": "t", "item_id": "i1",
            "sample_index": 0, "seed": 0, "sampling": {}, "text": text, "error": None}  # fmt: skip


def _filled(path: Path, n: int = 300) -> Path:
    """A store with the synthetic task, models, references and ``n`` more generations."""
    with Store(path) as st:
        add_synthetic(st)
        st.write("generations", [_gen(f"k{i}", f"answer number {i} " * 20) for i in range(n)])
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _content(path: Path) -> dict[str, list[tuple]]:
    """Every row of the tables the tests fill, read with plain DuckDB (read-only)."""
    db = duckdb.connect(str(path), read_only=True)
    try:
        return {
            t: db.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
            for t in ("generations", "reference_outputs", "items")
        }
    finally:
        db.close()


def _generations_block(path: Path) -> int:
    """File offset of a block holding data of the ``generations`` table."""
    db = duckdb.connect(str(path), read_only=True)
    try:
        size = db.execute("SELECT block_size FROM pragma_database_size()").fetchall()[0][0]
        block = db.execute(
            "SELECT min(block_id) FROM pragma_storage_info('generations') WHERE block_id >= 0"
        ).fetchall()[0][0]
    finally:
        db.close()
    assert block is not None, "no generations block on disk (layout changed?)"
    return HEADER + int(block) * int(size)


def _damage_generations(path: Path) -> None:
    """Zero 64 bytes at the start of a block of ``generations`` (its checksum then fails)."""
    offset = _generations_block(path)
    with open(path, "r+b") as fh:
        fh.seek(offset + 8)
        fh.write(b"\0" * 64)


# -- damaged and truncated ---------------------------------------------------------------


def test_damaged_block_is_found_on_open_with_the_fix(tmp_path: Path) -> None:
    path = _filled(tmp_path / "s.duckdb")
    backup = tmp_path / "backup.duckdb"
    shutil.copy(path, backup)
    _damage_generations(path)
    # the damage is latent: DuckDB opens the file and reads the migrations as before ...
    db = duckdb.connect(str(path))
    assert db.execute("SELECT count(*) FROM _slamkit_migrations").fetchall()[0][0] == len(
        MIGRATIONS
    )
    with pytest.raises(duckdb.Error, match="Corrupt database file"):  # ... until text is read
        db.execute("SELECT max(text) FROM generations").fetchall()
    db.close()
    before = _digest(path)
    # a store opened for writing (every job) checks every block before it writes ...
    with pytest.raises(StoreDamagedError) as err:
        Store(path)
    msg = str(err.value)
    assert msg.startswith(f"{path} is damaged (DuckDB: Corrupt database file")
    assert RESTORE in msg and msg.endswith("nothing was written.") and "\n" not in msg
    # ... a read-only one (analysis) skips the full scan; the read that touches the damaged
    # block says the same
    with Store(path, read_only=True) as ro, pytest.raises(StoreDamagedError) as err:
        ro.df("SELECT max(text) FROM generations")
    assert str(err.value).startswith(f"{path} is damaged (DuckDB: Corrupt database file")
    assert _digest(path) == before  # nothing was written
    shutil.copy(backup, path)  # restored from the copy: every row is back
    with Store(path) as st:
        assert st.count("generations") == 304 and st.count("reference_outputs") == 2


def test_damage_found_by_a_later_read_is_a_store_error(tmp_path: Path) -> None:
    """A short-lived store checks the file once; damage that appears later is still
    reported as damage when a query reads it (translated on every read path)."""
    path = _filled(tmp_path / "s.duckdb")
    st = Store(path, short_lived=True)
    assert st.count("generations") == 304
    _damage_generations(path)
    with pytest.raises(StoreDamagedError, match=rf"^{path} is damaged \(DuckDB: Corrupt"):
        st.df("SELECT text FROM generations")
    with pytest.raises(StoreDamagedError, match="nothing was written"):
        st.rows("SELECT max(text) FROM generations")


@pytest.mark.parametrize("keep", ["half-a-block", "100 bytes", "empty"])
def test_truncated_store_is_damaged_not_a_traceback(tmp_path: Path, keep: str) -> None:
    path = _filled(tmp_path / "s.duckdb")
    size = {
        "half-a-block": _generations_block(path) + 1000,
        "100 bytes": 100,
        "empty": 0,
    }[keep]
    os.truncate(path, size)
    with pytest.raises(StoreDamagedError) as err:
        Store(path)
    msg = str(err.value)
    expected = "is not a DuckDB database, or is damaged" if keep == "empty" else "is damaged"
    assert msg.startswith(f"{path} {expected} (DuckDB: ")
    assert RESTORE in msg and "\n" not in msg
    assert path.stat().st_size == size  # nothing was written
    if keep != "empty":
        assert "Could not read enough bytes" in msg


@pytest.mark.parametrize(
    "command",
    [
        ["score"],
        ["run", "--task", "t", "--endpoint", "m", "--base-url", "http://127.0.0.1:9/v1"],
        ["refs", "alpaca-eval", "--limit", "2"],
        ["smart"],
    ],
    ids=lambda c: c[0] if c[0] != "refs" else "refs-alpaca-eval",
)
def test_every_command_fails_on_a_damaged_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    path = _filled(tmp_path / "s.duckdb")
    _damage_generations(path)
    before = _digest(path)
    assert main(["--store", str(path), *command]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"slamkit: error: {path} is damaged (DuckDB: Corrupt database file")
    assert RESTORE in err and "Traceback" not in err and err.count("\n") == 1
    assert _digest(path) == before  # the command wrote nothing


# -- a store from a newer slamkit ----------------------------------------------------------


def test_store_from_a_newer_slamkit_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _filled(tmp_path / "s.duckdb")
    db = duckdb.connect(str(path))
    db.execute("INSERT INTO _slamkit_migrations (name) VALUES ('m104_future'), ('m105_later')")
    db.close()
    content = _content(path)
    for read_only in (False, True):
        with pytest.raises(StoreVersionError) as err:
            Store(path, read_only=read_only)
        assert str(err.value) == (
            f"{path} was written by a newer slamkit (migrations m104_future, m105_later "
            "unknown to slamkit 0.1.0): upgrade slamkit (pip install -U slamkit) or use a copy "
            "of the store made with this version; nothing was written."
        )
    assert main(["--store", str(path), "refs", "alpaca-eval", "--limit", "2"]) == 2
    assert "was written by a newer slamkit" in capsys.readouterr().err
    assert _content(path) == content  # no item of AlpacaEval was added


# -- read-only -----------------------------------------------------------------------------


def test_writing_a_store_opened_read_only_says_so(tmp_path: Path) -> None:
    path = _filled(tmp_path / "s.duckdb")
    content = _content(path)
    with Store(path, read_only=True) as st:
        assert st.count("generations") == 304
        with pytest.raises(StoreReadOnlyError) as err:
            st.write("generations", [_gen("new")])
    assert str(err.value).startswith(
        f"cannot write {path}: this store was opened with read_only=True — open it without "
        "read_only to write"
    )
    assert _content(path) == content


def _permissions_apply(where: Path) -> bool:
    """Does a folder without write permission stop this process from writing into it?"""
    probe = where / "probe"
    probe.mkdir(mode=0o555)
    try:
        (probe / "f").touch()
    except PermissionError:
        return True
    else:
        (probe / "f").unlink()
        return False
    finally:
        probe.rmdir()


@contextmanager
def _read_only_folder(src: Path, target: Path) -> Iterator[str]:
    """``target`` shows ``src`` read-only: a read-only bind mount as root, else chmod."""
    target.mkdir()
    if _permissions_apply(target.parent):  # a folder and files without write permission
        shutil.copytree(src, target, dirs_exist_ok=True)
        for f in target.iterdir():
            f.chmod(0o444)
        target.chmod(0o555)
        try:
            yield "permission denied"
        finally:
            target.chmod(0o755)
        return
    # root (CAP_DAC_OVERRIDE) ignores permissions: only a read-only mount stops it
    if shutil.which("mount") is None:
        pytest.skip("read-only location: running as root and there is no `mount` command")
    out = subprocess.run(["mount", "--bind", str(src), str(target)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"read-only location: root, but cannot bind-mount ({_first(out.stderr)})")
    try:
        out = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(target)], capture_output=True, text=True
        )
        if out.returncode != 0:
            pytest.skip(f"read-only location: cannot remount read-only ({_first(out.stderr)})")
        yield "read-only file system"
    finally:
        _unmount(target)


def test_store_in_a_read_only_location(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _filled(src / "s.duckdb")
    content = _content(src / "s.duckdb")
    with _read_only_folder(src, tmp_path / "ro") as reason:
        path = tmp_path / "ro" / "s.duckdb"
        with pytest.raises(StoreReadOnlyError) as err:
            Store(path)
        msg = str(err.value)
        assert msg.startswith(f"cannot write {path}: read-only ({reason}")
        assert "copy it somewhere writable" in msg and "read_only=True" in msg
        with Store(path, read_only=True) as st:  # what the message suggests works
            assert st.count("generations") == 304
        for new in (tmp_path / "ro" / "new.duckdb", tmp_path / "ro" / "sub" / "new.duckdb"):
            with pytest.raises(StoreReadOnlyError, match=rf"^cannot write {new}: read-only") as e:
                Store(new)
            assert "choose a store path in a writable folder" in str(e.value)
            assert not new.exists()
        assert main(["--store", str(path), "refs", "alpaca-eval", "--limit", "2"]) == 2
        err_text = capsys.readouterr().err
        assert err_text.startswith(f"slamkit: error: cannot write {path}: read-only")
        assert _content(path) == content


# -- disk full -----------------------------------------------------------------------------


@contextmanager
def _small_disk(target: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``target`` (skips when this process cannot mount)."""
    if os.geteuid() != 0:
        pytest.skip("disk full: needs root to mount a small tmpfs")
    if shutil.which("mount") is None:
        pytest.skip("disk full: there is no `mount` command")
    target.mkdir()
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        pytest.skip(f"disk full: mounting a tmpfs is not permitted here ({_first(out.stderr)})")
    try:
        yield target
    finally:
        _unmount(target)


def _first(text: str) -> str:
    return (text.strip().splitlines() or ["no message"])[0]


def _unmount(target: Path) -> None:
    """Unmount; lazily when a file is still open there (a test failed before closing)."""
    if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


def _chain(exc: BaseException) -> list[str]:
    out: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(out) < 20:
        out.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return out


def _fill(st: Store) -> tuple[set[str], StoreFullError]:
    """Write batches of incompressible generations until the disk is full."""
    stored: set[str] = set()
    for b in range(10_000):
        batch = [_gen(f"full-{b}-{j}", os.urandom(400).hex()) for j in range(20)]
        try:
            assert st.write("generations", batch) == 20
        except StoreFullError as exc:
            return stored, exc
        stored |= {str(r["gen_key"]) for r in batch}
    raise AssertionError("the small disk never filled up")


@pytest.mark.parametrize("where", ["wal", "checkpoint"])
def test_disk_full_says_so_first_and_keeps_every_row(tmp_path: Path, where: str) -> None:
    with _small_disk(tmp_path / "small", "3m") as disk:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * 600_000)  # freed afterwards, as a user would free space
        path = disk / "s.duckdb"
        st = Store(path)
        try:
            add_synthetic(st)
            if where == "checkpoint":  # DuckDB writes the file itself (not its WAL) when full
                with st.connection() as db:
                    db.execute("SET checkpoint_threshold = '256KB'")
            stored, exc = _fill(st)
            msg = str(exc)
            assert msg.startswith(
                f"No space left on the device holding {path} while writing generations: free "
                "space and rerun"
            )
            assert "the rows stored before are kept and this write was rolled back" in msg
            assert "\n" not in msg
            assert not any("cannot rollback" in link for link in _chain(exc))  # never secondary
            if where == "checkpoint":  # DuckDB invalidated the connection: the message says so
                assert "close the store" in msg and "open it again" in msg
                with pytest.raises(StoreError, match="No space left"):
                    st.count("generations")
            else:  # the connection lives on; the failed batch left no row
                assert st.count("generations") == len(stored) + 4
        finally:
            st.close()
        filler.unlink()  # space freed: every row committed before is there, none twice
        with Store(path) as st:
            keys = {r[0] for r in st.rows("SELECT gen_key FROM generations")}
            assert st.count("generations") == len(keys) == len(stored) + 4
            assert stored <= keys and st.count("reference_outputs") == 2
            assert st.write("generations", [_gen("after")]) == 1  # and it takes writes again


def test_disk_full_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs = tmp_path / "refs.jsonl"
    with refs.open("w") as fh:
        for i in range(3000):
            fh.write(json.dumps({"instruction": f"q{i}", "output": os.urandom(300).hex()}) + "\n")
    with _small_disk(tmp_path / "small", "3m") as disk:
        path = disk / "s.duckdb"
        with Store(path) as st:
            add_synthetic(st)
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * max(0, free - 400_000))  # ~400 KB left
        content = _content(path)
        args = ["refs", "import", str(refs), "--task", "big", "--text-col", "output"]
        assert main(["--store", str(path), *args, "--model", "gpt-4"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"slamkit: error: No space left on the device holding {path}")
        assert "free space and rerun" in err and "Traceback" not in err
        (disk / "filler").unlink()
        assert _content(path) == content  # the failed import left nothing, lost nothing


def test_no_space_to_create_a_store(tmp_path: Path) -> None:
    with _small_disk(tmp_path / "small", "1m") as disk:
        (disk / "filler").write_bytes(b"\0" * (1024 * 1024 - 8192))
        path = disk / "new.duckdb"
        with pytest.raises(StoreFullError, match=rf"^No space left on the device holding {path}"):
            Store(path)


# -- the translation itself ----------------------------------------------------------------


def test_explain_leaves_ordinary_errors_alone() -> None:
    """Only IO failures become StoreErrors: a constraint or a query error passes as it is."""
    assert (
        explain("s.duckdb", duckdb.ConstraintException("NOT NULL constraint failed"), "w", "o")
        is None
    )
    assert explain("s.duckdb", duckdb.BinderException("column x not found"), "w", "o") is None
    newer = duckdb.IOException(
        "IO Error: Trying to read a database file with version number 99, but we can only "
        "read version 65.\nThe database file was created with a newer version of DuckDB."
    )
    err = explain("s.duckdb", newer, "opening it", "nothing was written")
    assert isinstance(err, StoreVersionError)
    assert str(err).startswith("s.duckdb was written by a newer DuckDB (DuckDB: IO Error: ")
    assert "pip install -U slamkit duckdb" in str(err) and "\n" not in str(err)
