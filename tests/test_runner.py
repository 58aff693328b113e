"""Runner: sweeps, cache, resume, per-item errors — on a mock backend and on real llama.cpp."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from slamkit.backends.base import Sampling
from slamkit.backends.mock import MockBackend
from slamkit.errors import GGUFError, ModelNotFoundError
from slamkit.runner import EndpointModel, run_sweep
from slamkit.store import Store
from slamkit.tasks import add_task

ITEMS = [{"q": f"question {i}"} for i in range(5)]


def _task(store: Store, n: int = 5) -> None:
    add_task(store, "t", "Answer: {q}", ITEMS[:n], id_field=None)


class Factory:
    """Makes mock backends and records the order of loads and closes."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.events: list[str] = []
        self.backends: list[MockBackend] = []
        self.fail_on = fail_on

    def __call__(self, model: EndpointModel) -> MockBackend:
        assert all(b.closed for b in self.backends), "previous model not freed before load"
        self.events.append(f"load {model.name}")
        b = MockBackend(lambda u: f"{model.name} says {u}", name=model.name, fail_on=self.fail_on)
        self.backends.append(b)
        return b

    @property
    def calls(self) -> int:
        return sum(len(b.calls) for b in self.backends)


MODELS = [
    EndpointModel("m1", "http://127.0.0.1:9/v1"),
    EndpointModel("m2", "http://127.0.0.1:9/v1"),
]


def test_sweep_stores_every_cell_and_rerun_makes_no_call(store: Store) -> None:
    _task(store)
    f = Factory()
    samplings = [Sampling(temperature=0.0), Sampling(temperature=0.7)]
    res = run_sweep(store, MODELS, "t", samplings, n_samples=3, backend_factory=f, progress=False)
    assert (res.planned, res.generated, res.failed) == (2 * 5 * 2 * 3, 60, 0)
    assert store.count("generations") == 60
    assert all(b.closed for b in f.backends)
    seeds = store.df("SELECT DISTINCT seed, sample_index FROM generations ORDER BY 2")
    assert seeds.values.tolist() == [[0, 0], [1, 1], [2, 2]]
    f2 = Factory()
    res2 = run_sweep(store, MODELS, "t", samplings, n_samples=3, backend_factory=f2, progress=False)
    assert (res2.cached, res2.model_calls, f2.events) == (60, 0, [])
    assert store.count("generations") == 60
    # the run row carries provenance
    run = store.df("SELECT * FROM runs WHERE kind = 'generate'").iloc[0]
    assert json.loads(run["sampling"])[1]["temperature"] == 0.7
    assert run["n_threads"] >= 1 and json.loads(run["hardware"])["logical_cores"]


def test_per_item_errors_are_stored_and_retried(store: Store) -> None:
    _task(store)
    res = run_sweep(store, MODELS[:1], "t", backend_factory=Factory("question 3"), progress=False)
    assert (res.generated, res.failed) == (4, 1)
    err = store.df("SELECT item_id, error, text FROM generations WHERE error IS NOT NULL")
    assert len(err) == 1 and "scripted failure" in err["error"][0] and err["text"][0] is None
    f = Factory()
    res2 = run_sweep(store, MODELS[:1], "t", backend_factory=f, progress=False)
    assert (res2.cached, res2.generated, f.calls) == (4, 1, 1)
    assert store.count("generations") == 5
    assert store.count("generations", "error IS NOT NULL") == 0


def test_more_items_extends_the_sweep(store: Store) -> None:
    _task(store)
    run_sweep(store, MODELS[:1], "t", limit=2, backend_factory=Factory(), progress=False)
    f = Factory()
    res = run_sweep(store, MODELS[:1], "t", limit=5, backend_factory=f, progress=False)
    assert (res.cached, res.generated, f.calls) == (2, 3, 3)


def test_same_prompt_in_two_tasks_or_items_is_two_cells(store: Store) -> None:
    add_task(store, "t1", "{q}", [{"id": "a", "q": "same"}, {"id": "b", "q": "same"}], "id")
    add_task(store, "t2", "{q}", [{"id": "a", "q": "same"}, {"id": "c", "q": "other"}], "id")
    for task in ("t1", "t2"):
        res = run_sweep(store, MODELS[:1], task, backend_factory=Factory(), progress=False)
        assert (res.cached, res.generated) == (0, 2), task
    got = store.df("SELECT task_id, item_id FROM generations ORDER BY 1, 2").values.tolist()
    assert got == [["t1", "a"], ["t1", "b"], ["t2", "a"], ["t2", "c"]]


def test_a_backend_that_fails_to_load_is_recorded(store: Store) -> None:
    _task(store, 2)

    def broken(model: EndpointModel) -> MockBackend:
        raise RuntimeError("CUDA out of memory")

    res = run_sweep(store, MODELS[:1], "t", backend_factory=broken, progress=False)
    assert res.failed == 2
    errors = store.df("SELECT error FROM generations")["error"].tolist()
    assert all("model failed to load" in e and "CUDA out of memory" in e for e in errors)


def test_missing_model_path_fails_before_anything(store: Store, tmp_path: Path) -> None:
    _task(store)
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFoundError, match="nope.gguf"):
        run_sweep(store, [missing], "t", backend_factory=Factory(), progress=False)
    assert store.count("generations") == 0 and store.count("runs") == 0


def test_text_file_renamed_gguf_is_a_clear_error(store: Store, tmp_path: Path) -> None:
    _task(store)
    run_sweep(store, MODELS[:1], "t", backend_factory=Factory(), progress=False)
    bad = tmp_path / "notes.gguf"
    bad.write_text("these are my notes, not a model\n")
    with pytest.raises(GGUFError, match="notes.gguf"):
        run_sweep(store, [bad], "t", backend_factory=Factory(), progress=False)
    assert store.count("generations") == 5  # nothing already computed is lost


def test_unknown_task_names_the_stored_ones(store: Store) -> None:
    _task(store)
    with pytest.raises(Exception, match="No task 'x'.*t"):
        run_sweep(store, MODELS, "x", backend_factory=Factory(), progress=False)


# -- the real path: llama.cpp with the default small models -------------------------------


@pytest.mark.slow
def test_real_greedy_is_reproducible_with_timings(
    smollm2: Path, gemma: Path, tmp_path: Path
) -> None:
    texts = []
    for i in range(2):
        with Store(tmp_path / f"s{i}.duckdb") as st:
            _task(st, 2)
            res = run_sweep(
                st, [smollm2, gemma], "t", Sampling(max_tokens=12), n_threads=1, progress=False
            )
            assert (res.generated, res.failed) == (4, 0)
            df = st.df("SELECT g.*, m.name FROM generations g JOIN models m USING (model_id)")
            texts.append(df.sort_values("gen_key")[["gen_key", "text"]].values.tolist())
            for col in ["ttft_s", "prefill_tps", "decode_tps", "latency_s", "load_time_s",
                        "peak_rss_mb", "model_mem_mb", "prompt_tokens",
                        "completion_tokens"]:  # fmt: skip
                assert df[col].notna().all() and (df[col] > 0).all(), col
            fmts = set(df["chat_format"])
            assert "gguf-template" in fmts and any(
                f.startswith("fallback:gemma-turns:") for f in fmts
            )
            # the Gemma turn format ends with a newline, so answers do not start with one
            assert not any(t.startswith("\n") for t in df["text"])
            run = st.df("SELECT * FROM runs WHERE kind = 'generate'").iloc[0]
            assert run["llama_cpp_python_version"] == "0.3.36"
            assert "CPU :" in run["llama_cpp_system_info"]  # llama.cpp's own system info
    assert texts[0] == texts[1]  # same keys, byte-identical greedy text
    assert all(t for _, t in texts[0])


@pytest.mark.slow
def test_real_chat_formatting_is_exact(smollm2: Path, gemma: Path) -> None:
    from slamkit.backends.llamacpp import LlamaCppBackend

    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    with LlamaCppBackend(smollm2, n_threads=1) as b:
        prompt = b._formatter(messages=msgs).prompt
        assert prompt == (
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
        _, stop_ids, _ = b.format(msgs)
        assert b.llm.tokenize(b"<|im_end|>", add_bos=False, special=True)[0] in stop_ids
    with LlamaCppBackend(gemma, n_threads=1) as b:
        prompt = b._formatter(messages=msgs).prompt
        assert prompt == (
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
        )
        assert b.chat_format.startswith("fallback:gemma-turns:")


@pytest.mark.slow
def test_endpoint_models_sweep_through_the_openai_client(llama_server: str, tmp_path: Path) -> None:
    """The HTTP backend in a sweep: a real llama_cpp.server on 127.0.0.1, via the CLI."""
    db = tmp_path / "endpoint.duckdb"
    with Store(db) as st:
        _task(st, 2)
    cmd = [
        sys.executable, "-m", "slamkit.cli", "--store", str(db), "run", "--task", "t",
        "--endpoint", "smollm2", "--base-url", llama_server, "--max-tokens", "8", "--quiet",
    ]  # fmt: skip
    for expected in ("2 cells: 0 cached, 2 generated", "2 cells: 2 cached, 0 generated"):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and expected in out.stdout, out.stdout + out.stderr[-2000:]
    with Store(db) as st:
        df = st.df("SELECT g.*, m.source, m.path FROM generations g JOIN models m USING (model_id)")
    assert (df["source"] == "endpoint").all() and (df["backend"] == "OpenAIBackend").all()
    assert df["text"].str.len().gt(0).all() and df["ttft_s"].gt(0).all()
    assert df["completion_tokens"].between(1, 8).all() and df["path"][0] == llama_server


@pytest.mark.slow
def test_gpu_request_degrades_to_cpu_without_cuda(smollm2: Path) -> None:
    import llama_cpp

    from slamkit.backends.llamacpp import LlamaCppBackend

    with LlamaCppBackend(smollm2, n_threads=1, n_gpu_layers=-1) as b:
        expected = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        assert b.n_gpu_layers == expected
        res = b.generate([{"role": "user", "content": "Hi"}], Sampling(max_tokens=4), seed=0)
        assert res.completion_tokens and res.text


def _sweep_cmd(store: Path) -> list[str]:
    return [
        sys.executable, "-m", "slamkit.cli", "--store", str(store), "run", "--task", "t",
        "--samples", "2", "--max-tokens", "24", "--temperature", "0.8", "--threads", "1",
        "--quiet", "--print-rows",
    ]  # fmt: skip


@pytest.mark.slow
def test_sigkill_mid_sweep_resumes_without_loss_or_duplicates(
    smollm2: Path, tmp_path: Path
) -> None:
    db = tmp_path / "kill.duckdb"
    with Store(db) as st:
        _task(st, 5)
    cmd = _sweep_cmd(db) + ["--model", str(smollm2)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    stored_before_kill: list[str] = []
    for kill_after in (2, 5):  # kill twice, at different points
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        seen = 0
        for line in proc.stdout:
            if line.startswith("stored "):
                stored_before_kill.append(line.split()[1])
                seen += 1
                if seen == kill_after:
                    break
        os.kill(proc.pid, signal.SIGKILL)  # mid-generation of the next cell
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    with Store(db) as st:
        keys = st.df("SELECT gen_key, error FROM generations")
    assert len(keys) == 5 * 2 and keys["gen_key"].is_unique
    assert keys["error"].isna().all()
    assert set(stored_before_kill) <= set(keys["gen_key"])  # nothing committed was lost
    # rows are committed in small batches: each printed key was committed, and the rest of
    # its batch with it — so at least the printed ones are cached, and the rest generated
    import re

    found = re.search(r"10 cells: (\d+) cached, (\d+) generated", done.stdout)
    assert found, done.stdout
    cached, generated = int(found.group(1)), int(found.group(2))
    assert cached >= len(set(stored_before_kill)) and cached + generated == 10
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert "10 cells: 10 cached, 0 generated" in again.stdout


def test_batched_generation_keys_are_byte_identical() -> None:
    """plan_cells hashes the parts shared by an item's samples once; the keys must be the
    ones generation_key gives for every kind of value (unicode, quotes, nested sampling)."""
    from slamkit.keys import generation_key, generation_keys

    messages = [{"role": "system", "content": 'Be "brief" \u00e9\u4e2d'},
                {"role": "user", "content": "line\nbreak \\ tab\t"}]  # fmt: skip
    for sampling in ({"temperature": 0.7, "max_tokens": 64, "stop": ["\n", "</s>"]}, {}):
        samples = [(s + 3, s) for s in range(5)]
        got = generation_keys("sha", "t\u00e9", "item \"1\"", messages, "gemma-turns",
                              sampling, samples)  # fmt: skip
        want = [generation_key("sha", "t\u00e9", "item \"1\"", messages, "gemma-turns",
                               sampling, sd, k) for sd, k in samples]  # fmt: skip
        assert got == want and len(set(got)) == 5
