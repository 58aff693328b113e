"""The batch parameters file is checked once, at the boundary, before any notebook runs.

Every bad value gives one line naming the file, the key, the value and what is allowed;
`slamkit batch` exits 2; nothing is written: no store file, no output folder, and an
existing store keeps its bytes and row counts. A parameters file holding a secret is
refused, whether or not the environment variable is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from helpers import add_synthetic

from slamkit import batch
from slamkit.cli import main as cli_main
from slamkit.store import Store

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PARAMS = ROOT / "data" / "default_params.yaml"
KEY = "sk-test-PLANTED0123456789abcdef"
TABLES = ["models", "tasks", "items", "reference_outputs", "generations", "runs", "scores"]


@pytest.fixture(autouse=True)
def no_notebook_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check that lets a bad file through fails here instead of running the series."""
    import papermill

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a notebook ran: {args[0] if args else kwargs}")

    monkeypatch.setattr(papermill, "execute_notebook", refuse)


@pytest.fixture(scope="module")
def declared() -> dict[str, dict[str, str]]:
    return {p.stem: batch.declared_parameters(p) for p in batch.series()}


def _batch(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str], store: Path | None = None
) -> tuple[int, str, Path]:
    """Run `slamkit batch --params FILE` on ``text`` (plus a store_path in tmp_path unless
    the text names one); return (exit code, stderr, parameters file)."""
    store = store or tmp_path / "store.duckdb"
    if not text.lstrip().startswith("store_path:"):
        text = f"store_path: {store}\n{text}"
    f = tmp_path / "my.yaml"
    f.write_text(text)
    capsys.readouterr()
    rc = cli_main(["batch", "--params", str(f), "--out", str(tmp_path / "out")])
    return rc, capsys.readouterr().err, f


BAD = [
    # (line in the file, what the message must say)
    ('max_tokens: "abc"',
     "max_tokens = 'abc' is not allowed: a whole number >= 1 and <= 65,536 (e.g. 128)"),
    ("temperature: hot", "temperature = 'hot' is not allowed: a number from 0 to 2"),
    ("n_items: -1", "n_items = -1 is not allowed: a whole number >= 1 (e.g. 10), or null"),
    ("n_items: 0", "n_items = 0 is not allowed: a whole number >= 1"),
    ("n_items: 2.5", "n_items = 2.5 is not allowed: a whole number >= 1"),
    ("utilization: 2", "utilization = 2 is not allowed: a number above 0 and at most 1"),
    ("utilization: 0", "utilization = 0 is not allowed: a number above 0 and at most 1"),
    ("api_price: gpt-5", "api_price = 'gpt-5' is not allowed: the name of an api row of "
                         "data/prices.csv: babbage-002"),
    ("instance: my-laptop", "instance = 'my-laptop' is not allowed: the name of an instance "
                            "row of data/prices.csv: aws-c7i.large"),
    ("max_tokens: true", "max_tokens = True is not allowed: a whole number >= 1"),
    ("max_tokens: 10000000000000", "is not allowed: a whole number >= 1 and <= 65,536"),
    ('max_tokens: "128"',
     "max_tokens = '128' is not allowed: a whole number >= 1 and <= 65,536 (e.g. 128); "
     "this is text, not a number: write it without quotes"),
    ("requests_per_month: 1e5", "requests_per_month = '1e5' is not allowed: a number > 0 "
                                "(e.g. 100000); YAML reads 1e5 as text"),
    ("temperature: 2.5", "temperature = 2.5 is not allowed: a number from 0 to 2"),
    ("temperature: .nan", "temperature = nan is not allowed"),
    ("n_samples: 0", "n_samples = 0 is not allowed: a whole number >= 1"),
    ("n_threads: -3", "n_threads = -3 is not allowed: a whole number >= 1"),
    ("seed: -1", "seed = -1 is not allowed: a whole number >= 0"),
    ("judge_max_tokens: 0", "judge_max_tokens = 0 is not allowed: a whole number >= 1"),
    ("delta: 1", "delta = 1 is not allowed: a number strictly between 0 and 1"),
    ("gamma: 0", "gamma = 0 is not allowed: a number strictly between 0 and 1"),
    ("hourly_usd: 0", "hourly_usd = 0 is not allowed: a number > 0"),
    ("conformity_tau: high", "conformity_tau = 'high' is not allowed: a number (e.g. 0.3)"),
    ("backend: vllm", "backend = 'vllm' is not allowed: one of 'llamacpp', 'mock'"),
    ("smart_method: fast", "smart_method = 'fast' is not allowed: one of 'smart', "
                           "'smart-mix', 'anytime'"),
    ('include_defaults: "true"', "include_defaults = 'true' is not allowed: true or false"),
    ("models: SmolLM2", "models = 'SmolLM2' is not allowed: a list of model names"),
    ("quant_types: [Q9_9]", "quant_types = ['Q9_9'] is not allowed: a list of quantization "
                            "types (e.g. [Q4_0, Q8_0]; [] for none); 'Q9_9' is not a "
                            "quantization type"),
    ("metrics: [rouge]", "metrics = ['rouge'] is not allowed: a list of metrics (e.g. [rougeL, "
                         "chrf, max_sentences:4]; [] for none); Unknown metric 'rouge'"),
    ('metrics: [rougeL, "max_sentences:abc"]', "metrics = ['rougeL', 'max_sentences:abc'] is "
                                               "not allowed: a list of metrics (e.g. [rougeL, "
                                               "chrf, max_sentences:4]; [] for none); metric "
                                               "'max_sentences:abc': the sentence limit"),
    ('models_dir: ""', "models_dir = '' is not allowed: the path of a folder"),
    ("judge_base_url: localhost:8080", "judge_base_url = 'localhost:8080' is not allowed: an "
                                       "http:// or https:// URL"),
    ("judge_base_url: http://127.0.0.1:8080/v1",
     "judge_base_url = 'http://127.0.0.1:8080/v1' and judge_model = None (default) go "
     "together: set both for the LLM judge, or neither"),
    ("capture_model: gpt-4", "capture_base_url = None (default) and capture_model = 'gpt-4' "
                             "go together"),
    ("quantize_model: null\nquant_types: [Q4_0]", "quant_types = ['Q4_0'] needs "
                                                  "quantize_model"),
    ("n_itmes: 3", "Unknown parameter(s) ['n_itmes']: no notebook declares them (did you "
                   "mean 'n_items' for 'n_itmes'?)"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "says"), BAD, ids=[b[0] for b in BAD])
def test_bad_value_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, says: str
) -> None:
    rc, err, f = _batch(tmp_path, line + "\n", capsys)
    assert rc == 2
    assert err.startswith(f"slamkit: error: {f}: "), err
    assert says in err, err
    assert err.strip().count("\n") == 0, "one line"
    assert "Traceback" not in err and err.rstrip().endswith("Nothing was run.")
    assert not (tmp_path / "store.duckdb").exists() and not (tmp_path / "out").exists()


def test_store_path_that_is_not_text_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in batch.NOTEBOOKS_DIR.iterdir())
    rc, err, f = _batch(tmp_path, "store_path: 5\n", capsys)
    assert rc == 2
    assert f"{f}: store_path = 5 is not allowed: the path of a DuckDB file, as text" in err
    assert sorted(p.name for p in batch.NOTEBOOKS_DIR.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.yaml"]
    for bad, why in [(":memory:", "an in-memory store would be gone"), (str(tmp_path), "folder")]:
        rc, err, _ = _batch(tmp_path, f"store_path: '{bad}'\n", capsys)
        assert rc == 2 and f"store_path = {bad!r} is not allowed" in err and why in err, err


def test_every_bad_key_is_named_in_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = 'max_tokens: "abc"\ntemperature: hot\nn_items: 0\napi_price: gpt-5\nn_itmes: 3\n'
    rc, err, f = _batch(tmp_path, text, capsys)
    assert rc == 2 and err.strip().count("\n") == 0
    assert f"{f}: 5 problems: (1) " in err
    for part in ["max_tokens = 'abc'", "temperature = 'hot'", "n_items = 0",
                 "api_price = 'gpt-5'", "['n_itmes']"]:  # fmt: skip
        assert part in err, part
    assert err.index("max_tokens") < err.index("temperature") < err.index("n_items = 0")


def test_an_existing_store_is_left_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "kept.duckdb"
    with Store(path) as st:
        add_synthetic(st)
        counts = {t: st.count(t) for t in TABLES}
    assert counts["generations"] > 0
    data = path.read_bytes()
    monkeypatch.setenv("OPENAI_API_KEY", "plain-credential-value-42")
    for line in ['max_tokens: "abc"', "temperature: hot", "utilization: 2",
                 f"judge_model: {KEY}", "capture_model: plain-credential-value-42"]:  # fmt: skip
        rc, err, _ = _batch(tmp_path, line + "\n", capsys, store=path)
        assert rc == 2, (line, err)
    assert path.read_bytes() == data
    with Store(path, read_only=True) as st:
        assert {t: st.count(t) for t in TABLES} == counts


def test_a_literal_key_is_refused_when_no_variable_is_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for line, where in [
        (f"judge_model: {KEY}", "judge_model looks like a secret: it is shaped like an API key"),
        (f"models: [ok, {KEY}]", "models[1] looks like a secret"),
        (f"judge_base_url: 'http://h/v1?key={KEY}'", "judge_base_url looks like a secret"),
        ("openai_api_key: planted-value", "parameter 'openai_api_key' looks like a secret"),
        ("hf_token: planted-value", "parameter 'hf_token' looks like a secret"),
    ]:
        rc, err, f = _batch(tmp_path, line + "\n", capsys)
        assert rc == 2 and err.startswith(f"slamkit: error: {f}: "), err
        assert where in err, err
        assert KEY not in err and "planted-value" not in err
        assert "keep it in the environment (export OPENAI_API_KEY=...;" in err
        assert not (tmp_path / "store.duckdb").exists() and not (tmp_path / "out").exists()


def test_a_value_equal_to_a_set_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "plain-credential-value-42"  # not key-shaped: only the variable gives it away
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    rc, err, f = _batch(tmp_path, f"capture_model: {secret}\n", capsys)
    assert rc == 2
    assert f"{f}: capture_model holds the value of the environment variable OPENAI_API_KEY" in err
    assert secret not in err
    monkeypatch.delenv("OPENAI_API_KEY")
    # the same value is an ordinary model name when no variable holds it (then it fails
    # only the pairing check: capture_model without capture_base_url)
    rc, err, _ = _batch(tmp_path, f"capture_model: {secret}\n", capsys)
    assert rc == 2 and "go together" in err and "secret" not in err


def test_names_that_point_at_a_key_are_not_secrets(declared: dict[str, dict[str, str]]) -> None:
    decl = {"x": {"api_key_env": "'OPENAI_API_KEY'", "judge_max_tokens": "256",
                  "token_file": "''", "capture_model": "None"}}  # fmt: skip
    ok = {"api_key_env": "MY_KEY", "judge_max_tokens": 64, "token_file": "/etc/k",
          "capture_model": "sk-no-key-required"}  # fmt: skip
    assert batch.validate_params(ok, decl, "f.yaml", env={}) == ok


def test_the_default_params_file_passes(declared: dict[str, dict[str, str]]) -> None:
    params = batch.load_params(DEFAULT_PARAMS)
    assert params.source == str(DEFAULT_PARAMS)
    assert batch.validate_params(params, declared, env={}) == dict(params)


def test_the_model_knows_every_notebook_parameter(declared: dict[str, dict[str, str]]) -> None:
    """Each parameter of the real series has an explicit rule, no rule is orphaned, and
    every notebook's own defaults pass them (the model and the notebooks agree)."""
    names = set().union(*[set(d) for d in declared.values()])
    assert names == set(batch.PARAMETERS)
    for stem, defaults in declared.items():
        values = {k: eval(v) for k, v in defaults.items()}  # literals of our own notebooks
        assert batch.validate_params(values, declared, stem, env={}) == values, stem


def test_values_are_normalized_as_the_notebooks_expect(
    declared: dict[str, dict[str, str]],
) -> None:
    out = batch.validate_params(
        {"temperature": 0, "max_tokens": 64.0, "utilization": 1, "n_items": None},
        declared, "f.yaml", env={},
    )  # fmt: skip
    assert out == {"temperature": 0.0, "max_tokens": 64, "utilization": 1.0, "n_items": None}
    assert isinstance(out["temperature"], float) and isinstance(out["max_tokens"], int)
    # hourly_usd set: the instance is only a label, no price row needed
    assert batch.validate_params({"instance": "my-box", "hourly_usd": 0.2}, declared, env={})


def _custom_series(tmp: Path) -> Path:
    d = tmp / "nbs"
    d.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}  # fmt: skip
    cell = nbformat.v4.new_code_cell(
        "label = 'x'\ncount = 3\nratio = 0.5\nflag = False\nnames = []\nopt = None\n"
        "max_tokens = 16\ncomputed = len('abc')"
    )
    cell.metadata["tags"] = ["parameters"]
    nb.cells.append(cell)
    nbformat.write(nb, d / "01_custom.ipynb")
    return d


def test_other_notebook_parameters_are_checked_against_their_default(tmp_path: Path) -> None:
    d = _custom_series(tmp_path)
    bad = {"label": 5, "count": "three", "ratio": "half", "flag": "no", "names": "a",
           "max_tokens": 0}  # fmt: skip
    with pytest.raises(batch.BatchError) as ei:
        batch.run_batch(bad, tmp_path / "out", notebooks_dir=d, log=lambda s: None)
    msg = str(ei.value)
    assert msg.startswith("parameters passed to run_batch: 6 problems: ")
    for part in ["label = 5 is not allowed: text (e.g. \"x\", the notebook's default)",
                 "count = 'three' is not allowed: a whole number (e.g. 3",
                 "ratio = 'half' is not allowed: a number (e.g. 0.5",
                 "flag = 'no' is not allowed: true or false",
                 "names = 'a' is not allowed: a list",
                 "max_tokens = 0 is not allowed: a whole number >= 1"]:  # fmt: skip
        assert part in msg, part
    assert not (tmp_path / "out").exists()
    good = {"label": "y", "count": 4, "ratio": 1, "flag": True, "names": ["a"], "opt": {"k": 1},
            "max_tokens": 8, "computed": "anything"}  # fmt: skip
    out = batch.validate_params(good, {"01_custom": batch.declared_parameters(
        d / "01_custom.ipynb")}, env={})  # fmt: skip
    assert out == {**good, "ratio": 1.0}


def test_the_python_entry_point_checks_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(f"store_path: {tmp_path / 's.duckdb'}\nmax_tokens: abc\n")
    with pytest.raises(batch.BatchError, match=r"p\.yaml: max_tokens = 'abc' is not allowed"):
        batch.run_batch(f, tmp_path / "out", log=lambda s: None)
    with pytest.raises(batch.BatchError, match=r"^parameters passed to run_batch: temperature"):
        batch.run_batch({"temperature": "hot"}, tmp_path / "out", log=lambda s: None)
    # a filled-in default (the CLI's --store) is checked too, and said to be one
    with pytest.raises(batch.BatchError, match=r"store_path = 5 \(default\) is not allowed"):
        batch.run_batch({}, tmp_path / "out", log=lambda s: None, defaults={"store_path": 5})
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(batch.BatchError, match="judge_model looks like a secret"):
        batch.run_batch({"judge_model": KEY}, tmp_path / "out", log=lambda s: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


def test_relative_model_paths_are_taken_from_where_you_run(tmp_path: Path) -> None:
    """The notebooks run in notebooks/; a relative glob in the file means the current
    directory, as relative *_path and *_dir values do."""
    out = batch._resolve_paths(
        {"model_paths": ["m/*.gguf", "/abs/x.gguf", "~/y.gguf"], "store_path": "s.duckdb"},
        tmp_path,
    )
    assert out["model_paths"] == [str(tmp_path / "m" / "*.gguf"), "/abs/x.gguf", "~/y.gguf"]
    assert out["store_path"] == str((tmp_path / "s.duckdb").resolve())
