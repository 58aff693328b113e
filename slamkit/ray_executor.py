"""The ``ray`` executor: the job engine's groups on Ray actors, on one machine or a cluster.

Each group (one model's cells) gets ``actors_per_model`` Ray actors; each actor owns one
backend for its whole life — the model loaded in process, or (``parallel=N``) a managed
llama.cpp server on its node fed N requests at a time — and declares what it needs
(``num_cpus``, ``num_gpus``: fractions let several small models share a GPU). Ray places
the actors; the driver sends each actor one chunk of cells at a time, streams results back
as they finish (never waiting for a whole model) and remains the only DuckDB writer.

* **Model files stay where they are.** Only cells, rows and small closures travel through
  Ray, never weights: each GGUF must be readable at the same path on every node (shared
  storage). An actor checks the file's sha256 against the catalog before loading; a missing
  or different file fails that model's cells with one message naming the node.
* **Faults.** A worker process that dies is restarted (``max_restarts``) and its task is
  retried (``max_task_retries``); the content keys make a retried cell idempotent. A model
  that cannot load is not a fault: the actor stays up and answers each cell with the load
  error, once, so nothing is retried forever.
* **Notebooks.** Worker logs stay in Ray's log folder (``log_to_driver=False``); progress is
  the engine's bar; Ctrl-C kills the actors (their servers go with them) and, when this
  executor started the local cluster, shuts it down.

``ray.init()`` starts a local cluster when no address is given (``RAY_ADDRESS`` or
``address=`` joins an existing one). Ray is optional: ``pip install 'slamkit[ray]'``.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Generator, Sequence
from typing import Any

from slamkit.backends.base import check_whole
from slamkit.cells import Group, Load, Outcome, Placement, chunks
from slamkit.errors import MissingDependencyError, SlamkitError


def require_ray() -> Any:
    """The ``ray`` module, or MissingDependencyError saying what to install."""
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError(
            "--executor ray needs Ray, which is not installed: pip install 'slamkit[ray]' "
            "(or pip install ray)."
        ) from exc
    return ray


class _Worker:
    """One Ray actor: opens its group's resource once and serves chunks of cells."""

    def __init__(self, group: Group, placement: Placement, server: dict[str, Any] | None) -> None:
        self.group, self.error = group, None
        self.node = platform.node()
        self.server: Any = None
        self.resource: Any = None
        try:
            _check_model_file(group.servable, self.node)
            if server is not None:
                from slamkit.backends.server import ManagedServer

                model = group.servable
                self.server = ManagedServer(model.path, name=model.name, **server).start()
                placement = Placement("server", server["parallel"], self.server)
            self.resource = group.open(placement)
        except Exception as exc:  # answered per cell by run(), never retried forever
            self.error = exc
            self.close()

    def run(self, cells: list[Any]) -> tuple[list[dict[str, Any]], str, bool]:
        """``(rows, node, opened)`` for ``cells``; a failure is a row with ``error``."""
        if self.error is not None:
            return [self.group.fail(c, self.error, "load") for c in cells], self.node, False
        try:
            rows = self.group.call(self.resource, cells)
        except Exception as exc:
            rows = [self.group.fail(c, exc, "call") for c in cells]
        return rows, self.node, True

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        if self.resource is not None:
            self.resource.close()
            self.resource = None
        if self.server is not None:
            self.server.stop()
            self.server = None


def _check_model_file(model: Any, node: str) -> None:
    """The GGUF a catalog entry names is readable here and has the catalog's sha256."""
    if model is None or not getattr(model, "sha256", None):
        return
    from pathlib import Path

    from slamkit.catalog import file_sha256

    path = Path(model.path)
    where = f"on node {node}"
    fix = (
        "Ray does not copy model files: put them on storage every node sees, at the same "
        "path (or run this model on the driver's machine)"
    )
    if not path.is_file():
        raise SlamkitError(f"{model.name} ({path.name}): the model file {path} is not readable "
                           f"{where} — {fix}.")  # fmt: skip
    digest = file_sha256(path)
    if digest != model.sha256:
        raise SlamkitError(
            f"{model.name} ({path.name}): the file {path} {where} has sha256 {digest[:12]}..., "
            f"not the catalog's {model.sha256[:12]}... — a different file sits at that path "
            f"on this node; {fix}."
        )


class RayExecutor:
    """Groups on Ray actors (see the module docstring).

    ``address``: a cluster to join (None: ``RAY_ADDRESS``, else a local cluster is started
    with ``num_cpus_total`` CPUs, default all). ``actors_per_model``: actors serving one
    model's cells at once; ``num_cpus`` / ``num_gpus``: each actor's resources;
    ``parallel``: serve each actor's model with a managed llama.cpp server of that many
    slots instead of in process (``server_options`` go to it). ``keep_cluster``: leave a
    local cluster this executor started running after the job (notebooks that run several
    jobs; call ``ray.shutdown()`` when done).
    """

    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        actors_per_model: int = 1,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        num_cpus_total: int | None = None,
        parallel: int | None = None,
        max_restarts: int = 2,
        max_task_retries: int = 2,
        keep_cluster: bool = False,
        **server_options: Any,
    ) -> None:
        require_ray()
        check_whole("actors_per_model", actors_per_model, 1, "actors per model")
        if parallel is not None:
            check_whole("parallel", parallel, 1, "server slots per actor")
        for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise SlamkitError(f"{name} must be a number >= 0, got {value!r}.")
        if num_gpus > 1 and num_gpus != int(num_gpus):
            raise SlamkitError(
                f"--ray-gpus (num_gpus) must be a fraction below 1 or a whole number of GPUs, "
                f"got {num_gpus:g} (Ray cannot split more than one GPU)."
            )
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.actors_per_model = actors_per_model
        self.num_cpus, self.num_gpus = float(num_cpus), float(num_gpus)
        self.num_cpus_total = num_cpus_total
        self.parallel = parallel
        self.concurrency = actors_per_model * (parallel or 1)
        self.max_restarts, self.max_task_retries = max_restarts, max_task_retries
        self.keep_cluster = keep_cluster
        self.server = {k: v for k, v in server_options.items() if v is not None}
        self._started = False

    # -- the cluster ---------------------------------------------------------------
    def connect(self) -> Any:
        """Join ``address`` or start a local cluster (once); returns the ray module."""
        ray = require_ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
                "configure_logging": True,
            }  # fmt: skip
            if self.address:
                _check_reachable(self.address)
                kwargs["address"] = self.address
            else:  # a new local cluster, even when a `ray start` cluster runs here
                kwargs["address"] = "local"
                kwargs["num_cpus"] = self.num_cpus_total or os.cpu_count() or 1
            try:
                ray.init(**kwargs)
            except Exception as exc:
                where = self.address or "a local cluster"
                raise SlamkitError(
                    f"Ray could not start or join {where} ({type(exc).__name__}: {exc}) — "
                    "check --ray-address (RAY_ADDRESS) and that `ray status` sees the cluster."
                ) from exc
            self._started = not self.address
        return ray

    def describe(self) -> dict[str, Any]:
        """Provenance: Ray version, cluster address, nodes and their hardware."""
        ray = self.connect()
        self._check_feasible(ray)
        nodes = [
            {
                "node": n.get("NodeManagerHostname") or n.get("NodeManagerAddress"),
                "address": n.get("NodeManagerAddress"),
                "cpus": n.get("Resources", {}).get("CPU"),
                "gpus": n.get("Resources", {}).get("GPU", 0),
                "memory_gb": round(n.get("Resources", {}).get("memory", 0) / 2**30, 1),
            }
            for n in ray.nodes()
            if n.get("Alive")
        ]
        return {
            "executor": self.name, "concurrency": self.concurrency, "parallel": self.parallel,
            "ray_version": ray.__version__,
            "cluster": self.address
            or ("local (started by slamkit)" if self._started else "joined (ray.init() before)"),
            "gcs_address": ray.get_runtime_context().gcs_address, "nodes": nodes,
            "actors_per_model": self.actors_per_model, "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus, "max_restarts": self.max_restarts,
            "max_task_retries": self.max_task_retries,
        }  # fmt: skip

    def _check_feasible(self, ray: Any) -> None:
        """SlamkitError (before anything runs) when no node can ever host one actor: Ray
        would otherwise wait for resources forever."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        cpus = max((r.get("CPU", 0.0) for r in nodes), default=0.0)
        gpus = max((r.get("GPU", 0.0) for r in nodes), default=0.0)
        for what, need, most, flag in (
            ("CPUs", self.num_cpus, cpus, "--threads"),
            ("GPUs", self.num_gpus, gpus, "--ray-gpus"),
        ):
            if need > most:
                raise SlamkitError(
                    f"each Ray actor asks for {need:g} {what} ({flag}), but no node of the "
                    f"cluster has more than {most:g} — lower {flag} or add a node that has "
                    "them (Ray would wait for it forever)."
                )

    def shutdown(self) -> None:
        """Stop the local cluster this executor started (``keep_cluster=False``)."""
        if self._started and not self.keep_cluster:
            require_ray().shutdown()
            self._started = False

    # -- running -------------------------------------------------------------------
    def stream(self, groups: Sequence[Group]) -> Generator[Outcome, None, None]:
        ray = self.connect()
        actor_cls = ray.remote(_Worker).options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_restarts=self.max_restarts,
            max_task_retries=self.max_task_retries, max_concurrency=self.parallel or 1,
        )  # fmt: skip
        load = Load()
        #: a task in flight: its group, cells, actor, in-flight token and placement
        pending: dict[Any, tuple[Group, list[Any], Any, int, Placement]] = {}
        #: each group's chunks not sent yet, shared by its actors: a live actor takes the
        #: next one, so an actor that dies for good leaves its work to the others
        queues: dict[int, list[list[Any]]] = {}
        actors: list[Any] = []

        def submit(actor: Any, group: Group, placement: Placement) -> None:
            queue = queues[id(group)]
            if queue:
                cells = queue.pop(0)
                token = load.enter()
                pending[actor.run.remote(cells)] = (group, cells, actor, token, placement)

        try:
            for group in groups:
                served = self.parallel is not None and group.servable is not None
                server = {"parallel": self.parallel, **self.server} if served else None
                depth = (self.parallel or 1) if served else 1
                parts = chunks(group)
                n = min(self.actors_per_model, len(parts))
                placement = Placement("ray", n * depth)  # this model's requests in flight
                queues[id(group)] = parts
                mine = [actor_cls.remote(group, placement, server) for _ in range(n)]
                actors += mine
                for actor in mine:
                    for _ in range(depth):
                        submit(actor, group, placement)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                group, cells, actor, token, placement = pending.pop(done[0])
                in_flight = load.exit(token)
                try:
                    rows, node, opened = ray.get(done[0])
                except Exception as exc:  # the actor died more often than it may restart
                    rows = [group.fail(c, _worker_lost(exc), "call") for c in cells]
                    node, opened = None, True
                submit(actor, group, placement)
                if not queues[id(group)] and not any(p[2] is actor for p in pending.values()):
                    _kill(ray, actor)  # its cells are done: free its CPUs / GPU share
                yield Outcome(group, cells, rows, placement, in_flight, opened, node)
        finally:
            for actor in actors:
                _kill(ray, actor)
            self.shutdown()


def _check_reachable(address: str) -> None:
    """Fail in seconds, with one line, when a ``host:port`` cluster address does not answer
    (Ray itself retries for minutes and prints C++ log lines)."""
    import socket

    if "://" in address or ":" not in address or address == "auto":
        return  # ray://... (Ray Client), "auto": left to Ray
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return
    except (OSError, ValueError) as exc:
        raise SlamkitError(
            f"the Ray cluster at {address} does not answer ({type(exc).__name__}: {exc}) — "
            "check --ray-address (RAY_ADDRESS): the head's host:port (6379 by default; "
            "`ray status` on the head prints it)."
        ) from exc


def _kill(ray: Any, actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already gone
        pass


def _worker_lost(exc: BaseException) -> SlamkitError:
    from slamkit.backends.llamacpp import one_line

    return SlamkitError(
        f"the Ray worker serving this model died more often than it may restart "
        f"({one_line(f'{type(exc).__name__}: {exc}', 200)}) — see Ray's logs (ray logs, or "
        "/tmp/ray/session_latest/logs); the cell is retried on the next run"
    )
