"""Batch: papermill series with parameters, failure naming, offline HTML, no secrets, escaping."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from slamkit import batch, secrets
from slamkit.cli import main as cli_main

PLANTED = "sk-test-PLANTED0123456789abcdef"
EVIL = "<script>alert('pwned')</script>"


def _nb(cells: list[tuple[str, str, list[str]]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for kind, src, tags in cells:
        c = nbformat.v4.new_code_cell(src) if kind == "code" else nbformat.v4.new_markdown_cell(src)
        if tags:
            c.metadata["tags"] = tags
        nb.cells.append(c)
    return nb


def _series(tmp: Path) -> Path:
    d = tmp / "nbs"
    d.mkdir()
    first = _nb(
        [
            ("markdown", "# First\nA chart and a model output.", []),
            ("code", "n_items = 2\nlabel = 'default'\nstore_path = 'x.duckdb'", ["parameters"]),
            ("code", "import os, pandas as pd, plotly.graph_objects as go", []),
            ("code", f"text = {EVIL!r}\nprint(text)\npd.DataFrame({{'text': [text]}})", []),
            (
                "code",
                "go.Figure(go.Bar(x=['a', 'b'], y=[n_items, 2 * n_items], name=label, "
                "hovertext=[text, text]))",
                [],
            ),
            (
                "code",
                "from IPython.display import HTML\nHTML('<p id=\"n\">n=%d</p>' % n_items)",
                [],
            ),
            # a careless notebook that dumps the environment: the batch must redact it
            ("code", "print({k: v for k, v in os.environ.items() if 'KEY' in k})", []),
            ("code", "os.write(2, os.environ.get('OPENAI_API_KEY', '').encode())", []),
        ]
    )
    second = _nb(
        [
            ("code", "fail = False", ["parameters"]),
            ("code", "x = 1", []),
            ("code", "if fail:\n    raise ValueError('boom on purpose')", []),
        ]
    )
    nbformat.write(first, d / "01_first.ipynb")
    nbformat.write(second, d / "09_report.ipynb")
    return d


@pytest.fixture()
def nbdir(tmp_path: Path) -> Path:
    return _series(tmp_path)


def test_params_file_validation(tmp_path: Path, nbdir: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("n_itmes: 3\n")
    with pytest.raises(batch.BatchError, match=r"Unknown parameter\(s\) \['n_itmes'\]"):
        batch.run_batch(bad, tmp_path / "out", notebooks_dir=nbdir)
    with pytest.raises(batch.BatchError, match="looks like a secret"):
        batch.run_batch({"openai_api_key": "x"}, tmp_path / "out", notebooks_dir=nbdir)
    broken = tmp_path / "b.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(batch.BatchError, match="b.yaml is not valid YAML"):
        batch.load_params(broken)
    j = tmp_path / "p.json"
    j.write_text(json.dumps({"n_items": 4}))
    assert batch.load_params(j) == {"n_items": 4}


def test_redact_forms() -> None:
    planted = {"OPENAI_API_KEY": PLANTED, "MY_TOKEN": 'ab"cdefghij'}
    text = f"x {PLANTED} y " + json.dumps('ab"cdefghij')
    out = secrets.redact(text, planted)
    assert PLANTED not in out and "[redacted OPENAI_API_KEY]" in out
    assert "cdefghij" not in out
    assert secrets.environment_secrets({"OPENAI_API_KEY": PLANTED, "PATH": "/usr/bin:/bin"}) == {
        "OPENAI_API_KEY": PLANTED
    }


def test_secret_names_beyond_api_key() -> None:
    env = {
        "AZURE_OPENAI_KEY": "x" * 20, "OPENAI_KEY": "w" * 20, "AWS_ACCESS_KEY_ID": "a" * 20,
        "GITHUB_AUTH": "g" * 20, "DB_PASS": "p" * 12, "ANTHROPIC_API_KEYS": "k" * 12,
        # locations and ordinary settings stay out
        "PATH": "/usr/bin:/bin", "PWD": "/work/main/x", "SSH_AUTH_SOCK": "/tmp/ssh-abc/agent",
        "KEY_FILE": "/etc/keys/k.pem", "GIT_AUTHOR_NAME": "Ada Lovelace", "HOME": "/home/ada",
    }  # fmt: skip
    assert set(secrets.environment_secrets(env)) == {
        "AZURE_OPENAI_KEY", "OPENAI_KEY", "AWS_ACCESS_KEY_ID", "GITHUB_AUTH", "DB_PASS",
        "ANTHROPIC_API_KEYS",
    }  # fmt: skip


def test_api_key_env_parameters_name_secrets() -> None:
    env = {"MY_ENDPOINT_CRED": "c" * 16, "OTHER": "o" * 16, "JUDGE_CRED": "j" * 16}
    params = {"api_key_env": "MY_ENDPOINT_CRED", "judge_api_key_env": "JUDGE_CRED", "n": 3}
    assert batch.batch_secrets(params, env) == {
        "MY_ENDPOINT_CRED": "c" * 16, "JUDGE_CRED": "j" * 16,
    }  # fmt: skip
    assert batch.batch_secrets({}, env) == {}


@pytest.mark.slow
def test_dead_kernel_is_named_and_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel killed mid-notebook: NotebookFailedError names the notebook, the cell and
    the log, and nothing it printed before dying is left unredacted on disk."""
    other = "cred-PLANTED-9876543210zyxw"
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    monkeypatch.setenv("MY_ENDPOINT_CRED", other)
    d = tmp_path / "nbs"
    d.mkdir()
    nb = _nb(
        [
            ("code", "api_key_env = 'OPENAI_API_KEY'", ["parameters"]),
            ("code", "import os, signal, sys", []),
            ("code", "print(os.environ['OPENAI_API_KEY'], os.environ[api_key_env])\n"
                     "sys.stderr.write(os.environ[api_key_env])", []),
            ("code", "os.kill(os.getpid(), signal.SIGKILL)  # the kernel dies here", []),
            ("code", "print('never runs')", []),
        ]
    )  # fmt: skip
    nbformat.write(nb, d / "01_dies.ipynb")
    out = tmp_path / "out"
    with pytest.raises(batch.NotebookFailedError) as ei:
        batch.run_batch(
            {"api_key_env": "MY_ENDPOINT_CRED"}, out, notebooks_dir=d, log=lambda s: None
        )
    msg = str(ei.value)
    assert "01_dies.ipynb" in msg and "DeadKernelError" in msg
    # cell 4 of the executed notebook (papermill injected the parameters as cell 1)
    assert "cell 4" in msg and "os.kill(os.getpid(), signal.SIGKILL)" in msg
    assert str(out / "logs" / "01_dies.log") in msg
    kept = out / "01_dies.ipynb"
    assert kept.exists()
    files = [f for f in out.rglob("*") if f.is_file()]
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert PLANTED not in text and other not in text, f
    assert "[redacted OPENAI_API_KEY]" in kept.read_text()
    assert "[redacted MY_ENDPOINT_CRED]" in kept.read_text()
    assert PLANTED not in msg and other not in msg


@pytest.mark.slow
def test_batch_runs_series_renders_offline_html(
    tmp_path: Path, nbdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    params = tmp_path / "params.yaml"
    params.write_text("n_items: 7\nlabel: from-yaml\nstore_path: rel/store.duckdb\n")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    res = batch.run_batch(params, out, notebooks_dir=nbdir, log=lambda s: None)
    assert [p.name for p in res.notebooks] == ["01_first.ipynb", "09_report.ipynb"]
    executed = nbformat.read(res.notebooks[0], as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "n_items = 7" in injected[0].source
    assert str(tmp_path / "rel" / "store.duckdb") in injected[0].source  # resolved path
    # the second notebook declares only `fail`: it gets no foreign parameters
    second = nbformat.read(res.notebooks[1], as_version=4)
    assert not [c for c in second.cells if "injected-parameters" in c.metadata.get("tags", [])]

    # report of the *report* notebook; render the first one too to check charts
    page = batch.render_html(res.notebooks[0], out / "first.html").read_text()
    assert res.report is not None and res.report.name == "report.html"
    assert page.count("Plotly.newPlot") == 1 and '"from-yaml"' in page
    assert page.count("plotly.js v") <= 2  # the library is inlined once (banner + version)
    assert not re.search(r"<script[^>]*src=[\"']?https?:", page, re.I)
    assert not re.search(r"<script[^>]*\ssrc=", page, re.I)  # no external script at all
    assert not re.search(r"<link[^>]*href=[\"']?https?:", page, re.I)
    assert 'id="n">n=7<' in page  # parameters changed the output
    # model output escaped everywhere: in the stream, the table and the chart
    assert EVIL not in page
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page or (
        "&lt;script&gt;alert" in page
    )
    # no secret in any file written
    assert (out / "logs" / "01_first.log").exists()  # the kernel's stderr, kept aside
    for f in out.rglob("*"):
        if f.is_file():
            assert PLANTED not in f.read_text(encoding="utf-8"), f
    assert "[redacted OPENAI_API_KEY]" in res.notebooks[0].read_text()


@pytest.mark.slow
def test_failing_notebook_names_cell(tmp_path: Path, nbdir: Path) -> None:
    with pytest.raises(batch.NotebookFailedError) as ei:
        batch.run_batch({"fail": True}, tmp_path / "out", notebooks_dir=nbdir, log=lambda s: None)
    msg = str(ei.value)
    assert "09_report.ipynb" in msg and "ValueError: boom on purpose" in msg
    assert "if fail:" in msg and "cell" in msg
    assert (tmp_path / "out" / "09_report.ipynb").exists()  # kept for inspection
    assert not (tmp_path / "out" / "report.html").exists()


@pytest.mark.slow
def test_cli_batch_reports_failure(
    tmp_path: Path, nbdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"fail": True}))
    rc = cli_main(
        ["batch", "--params", str(p), "--out", str(tmp_path / "o"), "--notebooks", str(nbdir),
         "--only", "09"]
    )  # fmt: skip
    assert rc == 2
    assert "boom on purpose" in capsys.readouterr().err
