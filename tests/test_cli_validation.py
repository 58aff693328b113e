"""Bad flags and API arguments are refused at the boundary: a one-line error naming the flag
(or parameter) and the value, a non-zero exit, and a store left exactly as it was.

Also: ``run --glob``, ``run --timeout`` reaching the endpoint backend, the first distinct
errors printed when every cell fails, judge time bounds, and judge ``limit`` counting items.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import TENSORS, FakeServer, add_synthetic, write_gguf

from slamkit.backends.base import Sampling
from slamkit.backends.mock import MockBackend
from slamkit.cli import main
from slamkit.engine import JobResult
from slamkit.errors import SlamkitError
from slamkit.judge import JudgeConfig, JudgeError, run_judge
from slamkit.judge.client import JudgeClient
from slamkit.references import capture_references, import_references, load_alpaca_eval
from slamkit.runner import EndpointModel, default_backend_factory, run_sweep
from slamkit.store import Store
from slamkit.tasks import load_items

TABLES = ("models", "tasks", "items", "reference_outputs", "runs", "generations", "scores",
          "judgments", "selections")  # fmt: skip


def counts(db: str | Path) -> dict[str, int]:
    with Store(db) as st:
        return {t: st.count(t) for t in TABLES}


@pytest.fixture()
def db(tmp_path: Path) -> str:
    """A store file with a task 't' (2 items, GPT-4 references, generations of 2 models)."""
    path = tmp_path / "s.duckdb"
    with Store(path) as st:
        add_synthetic(st)
    return str(path)


# -- CLI flags: argparse's one-line error, exit 2, store unchanged ---------------------------
JUDGE = ["judge", "--base-url", "http://127.0.0.1:9/v1", "--model", "j"]
CAPTURE = ["refs", "capture", "--task", "t", "--base-url", "http://127.0.0.1:9/v1", "--model", "x"]
IMPORT = ["refs", "import", "refs.jsonl", "--task", "t", "--text-col", "text"]
W1, W0 = "a whole number >= 1", "a whole number >= 0"
CASES = [
    # (argv after --store, flag, shown value, rule)
    (["refs", "alpaca-eval", "--limit", "-1"], "--limit", "-1", W1),
    (["refs", "alpaca-eval", "--limit", "0"], "--limit", "0", W1),
    ([*IMPORT, "--limit", "-1"], "--limit", "-1", W1),
    ([*CAPTURE, "--limit", "0"], "--limit", "0", W1),
    ([*CAPTURE, "--max-tokens", "0"], "--max-tokens", "0", W1),
    ([*CAPTURE, "--temperature", "3"], "--temperature", "3", "a number >= 0 and <= 2"),
    ([*CAPTURE, "--seed", "-1"], "--seed", "-1", W0),
    ([*CAPTURE, "--timeout", "0"], "--timeout", "0", "a number > 0"),
    (["run", "--task", "t", "--limit", "-1"], "--limit", "-1", W1),
    (["run", "--task", "t", "--limit", "0"], "--limit", "0", W1),
    (["run", "--task", "t", "--limit", "abc"], "--limit", "'abc'", W1),
    (["run", "--task", "t", "--limit", "2.5"], "--limit", "'2.5'", W1),
    (["run", "--task", "t", "--samples", "0"], "--samples", "0", W1),
    (["run", "--task", "t", "--seed", "-3"], "--seed", "-3", W0),
    (["run", "--task", "t", "--max-tokens", "0"], "--max-tokens", "0", W1),
    (["run", "--task", "t", "--max-tokens", "-5"], "--max-tokens", "-5", W1),
    (["run", "--task", "t", "--threads", "-3"], "--threads", "-3", W1),
    (["run", "--task", "t", "--threads-batch", "0"], "--threads-batch", "0", W1),
    (["run", "--task", "t", "--gpu-layers", "-2"], "--gpu-layers", "-2", "a whole number >= -1"),
    (["run", "--task", "t", "--n-ctx", "0"], "--n-ctx", "0", W1),
    (
        ["run", "--task", "t", "--temperature", "2.5"],
        "--temperature",
        "2.5",
        "a number >= 0 and <= 2",
    ),
    (
        ["run", "--task", "t", "--temperature", "nan"],
        "--temperature",
        "nan",
        "a number >= 0 and <= 2",
    ),
    (["run", "--task", "t", "--top-p", "0"], "--top-p", "0", "a number > 0 and <= 1"),
    (["run", "--task", "t", "--top-p", "1.5"], "--top-p", "1.5", "a number > 0 and <= 1"),
    (["run", "--task", "t", "--timeout", "-1"], "--timeout", "-1", "a number > 0"),
    ([*JUDGE, "--limit", "-1"], "--limit", "-1", W1),
    ([*JUDGE, "--max-tokens", "0"], "--max-tokens", "0", W1),
    ([*JUDGE, "--temperature", "-0.1"], "--temperature", "-0.1", "a number >= 0 and <= 2"),
    ([*JUDGE, "--timeout", "0"], "--timeout", "0", "a number > 0"),
    ([*JUDGE, "--max-attempts", "0"], "--max-attempts", "0", W1),
    ([*JUDGE, "--max-total", "inf"], "--max-total", "inf", "a number > 0"),
    (["smart", "--delta", "0"], "--delta", "0", "a number > 0 and < 1"),
    (["smart", "--delta", "1"], "--delta", "1", "a number > 0 and < 1"),
    (["smart", "--gamma", "1.5"], "--gamma", "1.5", "a number > 0 and < 1"),
    (["smart", "--tau", "2"], "--tau", "2", "a number >= -1 and <= 1"),
    (["smart", "--utilization", "0"], "--utilization", "0", "a number > 0 and <= 1"),
    (["smart", "--seed", "-1"], "--seed", "-1", W0),
    (["simulate", "--seeds", "0"], "--seeds", "0", W1),
    (["simulate", "--gamma", "0"], "--gamma", "0", "a number > 0 and < 1"),
    (["simulate", "--seed", "-1"], "--seed", "-1", W0),
]


@pytest.mark.parametrize(("argv", "flag", "shown", "rule"), CASES,
                         ids=[" ".join(c[0][:2] + c[0][-2:]) for c in CASES])  # fmt: skip
def test_bad_flag_is_one_line_exit_2_and_store_unchanged(
    db: str, argv: list[str], flag: str, shown: str, rule: str, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(Path(db).parent)
    Path("refs.jsonl").write_text('{"instruction": "q", "text": "a"}\n')
    before = counts(db)
    with pytest.raises(SystemExit) as exc:
        main(["--store", db, *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.endswith(f"error: argument {flag}: must be {rule}, got {shown}") or (
        f"error: argument {flag}: must be {rule}, got {shown} (" in last
    ), err
    assert "Traceback" not in err
    assert counts(db) == before


def test_good_flags_still_parse() -> None:
    from slamkit.cli import build_parser

    args = build_parser().parse_args(
        ["run", "--limit", "3", "--gpu-layers", "-1", "--temperature", "0", "--temperature",
         "0.7", "--top-p", "1", "--timeout", "5", "--seed", "0"]
    )  # fmt: skip
    assert (args.limit, args.gpu_layers, args.temperature, args.top_p) == (3, -1, [0.0, 0.7], 1.0)
    assert args.timeout == 5.0 and args.seed == 0
    smart = build_parser().parse_args(["smart", "--tau", "-0.5", "--utilization", "1"])
    assert (smart.tau, smart.utilization, smart.delta) == (-0.5, 1.0, 0.1)


# -- the Python API: the same ranges, SlamkitError naming the parameter ---------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 0}, "Sampling max_tokens must be a whole number >= 1, got 0"),
        ({"max_tokens": -5}, "Sampling max_tokens must be a whole number >= 1, got -5"),
        ({"max_tokens": "abc"}, "Sampling max_tokens must be a whole number >= 1, got 'abc'"),
        ({"max_tokens": 12.5}, "Sampling max_tokens must be a whole number >= 1, got 12.5"),
        ({"temperature": "hot"}, "Sampling temperature must be a number >= 0 and <= 2, "
                                 "got 'hot'"),
        ({"temperature": 2.5}, "Sampling temperature must be a number >= 0 and <= 2, got 2.5"),
        ({"temperature": math.nan}, "Sampling temperature must be a number >= 0 and <= 2"),
        ({"top_p": 0}, "Sampling top_p must be a number > 0 and <= 1, got 0"),
        ({"top_k": -1}, "Sampling top_k must be a whole number >= 0, got -1"),
        ({"repeat_penalty": 0}, "Sampling repeat_penalty must be a number > 0, got 0"),
    ],
)  # fmt: skip
def test_sampling_checks_each_field(kwargs: dict, message: str) -> None:
    with pytest.raises(SlamkitError) as exc:
        Sampling(**kwargs)
    assert message in str(exc.value)


def test_sampling_accepts_the_edges() -> None:
    s = Sampling(temperature=2, top_p=1, top_k=0, max_tokens=1, repeat_penalty=0.5)
    assert s.as_dict()["temperature"] == 2


def _mock_factory(model: EndpointModel) -> MockBackend:
    return MockBackend(lambda u: f"{model.name}: {u}", name=model.name)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": -1}, "limit must be a whole number >= 1, got -1"),
        ({"limit": 0}, "limit must be a whole number >= 1, got 0"),
        ({"limit": "3"}, "limit must be a whole number >= 1, got '3'"),
        ({"n_samples": 0}, "n_samples must be a whole number >= 1, got 0"),
        ({"seed": -1}, "seed must be a whole number >= 0, got -1"),
        ({"n_threads": -3}, "n_threads must be a whole number >= 1, got -3"),
        ({"n_threads_batch": 0}, "n_threads_batch must be a whole number >= 1, got 0"),
        ({"n_gpu_layers": -2}, "n_gpu_layers must be a whole number >= -1, got -2"),
        ({"n_ctx": 0}, "n_ctx must be a whole number >= 1, got 0"),
        ({"samplings": []}, "samplings is empty"),
        ({"samplings": [{"max_tokens": 5}]}, "samplings must hold Sampling objects"),
    ],
)  # fmt: skip
def test_run_sweep_refuses_bad_arguments_before_any_write(
    db: str, kwargs: dict, message: str
) -> None:
    before = counts(db)
    with Store(db) as st, pytest.raises(SlamkitError) as exc:
        run_sweep(st, [EndpointModel("e1", "http://127.0.0.1:9/v1")], "t",
                  backend_factory=_mock_factory, progress=False, **kwargs)  # fmt: skip
    assert message in str(exc.value)
    assert counts(db) == before  # no runs row, no model row, no generation


def test_run_sweep_accepts_the_edges(db: str) -> None:
    with Store(db) as st:
        res = run_sweep(st, [EndpointModel("e1", "http://127.0.0.1:9/v1")], "t", limit=1,
                        n_threads=1, n_gpu_layers=-1, backend_factory=_mock_factory,
                        progress=False)  # fmt: skip
        assert (res.generated, res.failed) == (1, 0)
        assert st.count("runs") == 1


def test_reference_loaders_and_load_items_refuse_bad_limits(db: str, tmp_path: Path) -> None:
    refs = tmp_path / "refs.jsonl"
    refs.write_text('{"instruction": "q1", "text": "a"}\n{"instruction": "q2", "text": "b"}\n')
    before = counts(db)
    with Store(db) as st:
        with pytest.raises(SlamkitError, match=r"limit must be a whole number >= 1, got -1"):
            load_alpaca_eval(st, limit=-1)
        with pytest.raises(SlamkitError, match=r"limit must be a whole number >= 1, got 0 \("
                           r"the first N rows of the file"):  # fmt: skip
            import_references(st, refs, "t2", columns={"text": "text"}, limit=0)
        with pytest.raises(SlamkitError, match=r"limit must be a whole number >= 1, got -1"):
            capture_references(st, _mock_factory(EndpointModel("e")), "t", "e", Sampling(), 0,
                               limit=-1, progress=False)  # fmt: skip
        with pytest.raises(SlamkitError, match=r"limit must be a whole number >= 1, got True"):
            load_items(st, "t", limit=True)
    assert counts(db) == before
    with Store(db) as st:  # a good limit still works
        res = import_references(
            st, refs, "t2", columns={"text": "text"}, source_model="gpt-4", limit=1
        )
        assert (res.rows, res.refs_added) == (1, 1)


def test_cli_limit_minus_one_no_longer_drops_a_row(tmp_path: Path, capsys) -> None:
    db = str(tmp_path / "s.duckdb")
    refs = tmp_path / "refs.jsonl"
    refs.write_text('{"instruction": "q1", "text": "a"}\n{"instruction": "q2", "text": "b"}\n')
    argv = [
        "--store",
        db,
        "refs",
        "import",
        str(refs),
        "--task",
        "t",
        "--text-col",
        "text",
        "--model",
        "gpt-4",
    ]
    with pytest.raises(SystemExit):
        main([*argv, "--limit", "-1"])
    assert "argument --limit: must be a whole number >= 1, got -1" in capsys.readouterr().err
    assert not Path(db).exists()  # nothing was even opened
    assert main(argv) == 0
    assert counts(db)["reference_outputs"] == 2


def test_endpoint_model_timeout_is_checked_and_reaches_the_backend() -> None:
    with pytest.raises(SlamkitError, match=r"EndpointModel\('gpt-4'\) timeout must be a "
                       r"number > 0, got 0"):  # fmt: skip
        EndpointModel("gpt-4", timeout=0)
    model = EndpointModel("local", "http://127.0.0.1:9/v1", timeout=7.5)
    backend = default_backend_factory()(model)
    try:
        assert backend._client.timeout == 7.5  # type: ignore[attr-defined]
    finally:
        backend.close()
    assert model.model_id == EndpointModel("local", "http://127.0.0.1:9/v1").model_id


def test_run_timeout_flag_reaches_the_endpoint_and_rows_are_stored(
    db: str, capsys, monkeypatch
) -> None:
    """``run --endpoint M --timeout 0.3`` against a server that hangs: each cell fails with
    a timeout after ~0.3 s (not the 60 s default) and is stored with its error."""
    from slamkit.backends import openai_compat

    seen: list[float] = []
    real = openai_compat.OpenAIBackend

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, *a, **kw) -> None:
            seen.append(kw["timeout"])
            super().__init__(*a, **{**kw, "max_retries": 0})

    monkeypatch.setattr(openai_compat, "OpenAIBackend", Spy)
    with FakeServer({"": ["hang"]}, hang_s=2.0) as srv:
        rc = main(["--store", db, "run", "--task", "t", "--endpoint", "slow", "--base-url",
                   srv.base_url, "--timeout", "0.3", "--quiet"])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 1 and seen == [0.3]
    assert "2 cells: 0 cached, 0 generated, 2 failed" in out
    assert "every cell failed (2 of 2)" in err
    with Store(db) as st:
        rows = st.df("SELECT error FROM generations WHERE model_id LIKE 'endpoint-%'")
    assert len(rows) == 2 and all(rows["error"].notna())


# -- run: --glob, folders, the first distinct errors ----------------------------------------
def _weird_gguf(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    kv = [("general.architecture", 8, "nonsense-arch"), ("general.name", 8, "weird")]
    return write_gguf(folder / "weird.gguf", kv, TENSORS)


def test_run_with_a_folder_as_model_names_glob_which_run_accepts(
    db: str, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "models"
    _weird_gguf(folder)
    before = counts(db)
    assert main(["--store", db, "run", "--task", "t", "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"slamkit: error: --model {folder}: is a folder, not a GGUF file. Pass it as --glob" in (
        err
    )
    assert len(err.strip().splitlines()) == 1
    assert counts(db) == before
    assert main(["--store", db, "run", "--task", "t", "--glob", str(tmp_path / "none/*.gguf")]) == 2
    err = capsys.readouterr().err
    assert "--glob" in err and "matches no .gguf file" in err and len(err.strip().splitlines()) == 1
    assert counts(db) == before  # and the defaults were not run instead


def test_run_every_cell_failing_prints_the_errors_and_exits_1(
    db: str, tmp_path: Path, capsys
) -> None:
    """An unknown-architecture GGUF (found through --glob on its folder) fails every cell:
    the CLI prints the summary, the first distinct error naming the file, and exits 1."""
    _weird_gguf(tmp_path / "models")
    rc = main(["--store", db, "run", "--task", "t", "--glob", str(tmp_path / "models"),
               "--quiet"])  # fmt: skip
    out, err = capsys.readouterr()
    both = out + err
    assert rc == 1
    assert "2 cells: 0 cached, 0 generated, 2 failed" in out
    assert "weird.gguf" in both and "nonsense-arch" in both, both
    assert "every cell failed (2 of 2)" in err
    assert "Traceback" not in both
    with Store(db) as st:
        assert st.count("generations", "error IS NOT NULL") == 2  # recorded, retried next run


def test_run_prints_at_most_three_distinct_errors(db: str, capsys, monkeypatch) -> None:
    """The printing itself, on a result with four distinct errors (whatever the summary
    line shows, each of the first three appears once and the fourth does not)."""
    import slamkit.runner

    res = JobResult(run_id="run-x", planned=5, failed=5)
    res.errors = [f"m{i}.gguf: cause {i}" for i in range(4)]  # type: ignore[attr-defined]
    monkeypatch.setattr(slamkit.runner, "run_sweep", lambda *a, **kw: res)
    assert main(["--store", db, "run", "--task", "t", "--endpoint", "m", "--quiet"]) == 1
    out, err = capsys.readouterr()
    for i in range(3):
        assert (out + err).count(f"m{i}.gguf: cause {i}") == 1
    assert "m3.gguf: cause 3" not in out + err
    assert "every cell failed (5 of 5)" in err


# -- judge: time bounds, limit counts items -------------------------------------------------
def test_judge_config_checks_its_bounds() -> None:
    url = "http://127.0.0.1:9/v1"
    for kw, msg in [
        ({"timeout_s": 0}, "JudgeConfig timeout_s must be a number > 0, got 0"),
        ({"max_total_s": -1}, "JudgeConfig max_total_s must be a number > 0, got -1"),
        ({"max_attempts": 0}, "JudgeConfig max_attempts must be a whole number >= 1, got 0"),
        ({"max_tokens": 0}, "JudgeConfig max_tokens must be a whole number >= 1, got 0"),
        ({"temperature": 3}, "JudgeConfig temperature must be a number >= 0 and <= 2, got 3"),
    ]:
        with pytest.raises(JudgeError) as exc:
            JudgeConfig(base_url=url, model="j", **kw)
        assert msg in str(exc.value)
    cfg = JudgeConfig(base_url=url, model="j")
    assert (cfg.timeout_s, cfg.total_s) == (60.0, 120.0)  # a hanging judge: <= 2 min a call
    assert JudgeConfig(base_url=url, model="j", timeout_s=300).total_s == 600


def test_a_hanging_judge_stops_at_the_total_limit_per_call() -> None:
    """timeout 0.4 s, 10 attempts allowed, but 1 s for the whole call: two attempts at most,
    and the error says the per-call limit ended it."""
    with FakeServer({"": ["hang"]}, hang_s=3.0) as srv:
        cfg = JudgeConfig(base_url=srv.base_url, model="j", timeout_s=0.4, max_attempts=10,
                          max_total_s=1.0, backoff_s=0.01, max_backoff_s=0.01)  # fmt: skip
        client = JudgeClient(cfg)
        try:
            res = client.call([{"role": "user", "content": "x"}], {"type": "object"})
        finally:
            client.close()
    assert res.parsed is None and res.attempts <= 3
    assert res.error is not None and "timed out after" in res.error
    assert "limit of 1s for all attempts" in res.error
    assert res.errors == ["timeout"] * res.attempts


THREE = {"i3": "ref three", "i1": "ref one", "i2": "ref two"}  # positions: i3, i1, i2
SIX = {(m, i): f"{m} answer {i}" for m in ("m1", "m2") for i in THREE}


def test_judge_limit_counts_items_not_pairs(store: Store) -> None:
    add_synthetic(store, gens=SIX, refs=THREE)
    verdict = 'ok:{"reasoning": "r", "verdict": "A"}'
    with FakeServer({"": [verdict]}) as srv:
        cfg = JudgeConfig(base_url=srv.base_url, model="j", timeout_s=5)
        counts_ = run_judge(store, cfg, limit=2, progress=False)
        judged = store.df("SELECT DISTINCT item_id FROM judgments")["item_id"].tolist()
        # 2 items (by position: i3, i1) x 2 models x 2 orders
        assert counts_.counts() == {"planned": 8, "cached": 0, "done": 8, "failed": 0}
        assert sorted(judged) == ["i1", "i3"]
        assert run_judge(store, cfg, limit=3, progress=False).done == 4  # i2's pairs
    with pytest.raises(SlamkitError, match="limit must be a whole number >= 1, got -1"):
        run_judge(store, cfg, limit=-1, progress=False)
    assert store.count("judgments") == 12


def test_judge_cli_limit_counts_items(tmp_path: Path, capsys) -> None:
    db = str(tmp_path / "s.duckdb")
    with Store(db) as st:
        add_synthetic(st, gens=SIX, refs=THREE)
    verdict = 'ok:{"reasoning": "r", "verdict": "B"}'
    with FakeServer({"": [verdict]}) as srv:
        rc = main(["--store", db, "judge", "--base-url", srv.base_url, "--model", "j",
                   "--quiet", "--limit", "1"])  # fmt: skip
    assert rc == 0
    assert "4 cells: 0 cached, 4 judged, 0 failed" in capsys.readouterr().out
    with Store(db) as st:
        assert st.df("SELECT DISTINCT item_id FROM judgments")["item_id"].tolist() == ["i3"]


def test_help_states_the_judge_worst_case_and_limit_meaning(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["judge", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a hanging judge costs at most this per call" in text
    assert "the first N items of each task by position" in text


def test_unknown_task_and_absurd_max_tokens_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from slamkit.backends import Sampling
    from slamkit.cli import main
    from slamkit.errors import SlamkitError
    from slamkit.store import Store

    db = str(tmp_path / "s.duckdb")
    Store(db).close()
    assert main(["--store", db, "score", "--task", "nosuch", "--metrics", "rougeL"]) == 2
    assert "No task 'nosuch'" in capsys.readouterr().err
    with Store(db) as st:
        assert st.count("scores") == 0
    with pytest.raises(SlamkitError, match="at most 65,536"):
        Sampling(max_tokens=10_000_000_000_000)
