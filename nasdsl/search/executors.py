"""Where trials run: in the driver, in a local process pool, or on a Ray cluster.

All three take :class:`~nasdsl.search.trial.Task` objects and give back
:class:`~nasdsl.search.trial.Outcome` objects in the order trials finish; the
driver keeps at most :attr:`Executor.slots` in flight. The choice of Ray tasks
over Ray Tune is argued in docs/search.md: the driver already holds the Optuna
study (its sampler, its storage) and checks every variant before it is
dispatched; what it needs from Ray is scheduling with resources, which a remote
function with ``num_cpus``/``num_gpus`` is.
"""

from __future__ import annotations

import os
from collections import deque

from nasdsl.errors import NasdslError
from nasdsl.search.trial import Outcome, Task, run_trial


class ExecutorError(NasdslError):
    """Ray or the pool cannot be started as asked (exit 2)."""


class Executor:
    """Runs trials; ``slots`` is how many may be in flight."""

    slots = 1

    def submit(self, task: Task) -> None:
        raise NotImplementedError

    def next_done(self) -> Outcome:
        """The next trial to finish (blocks until one does)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class Inline(Executor):
    """In the driver's own process, one at a time (``--workers 0``): for debugging and for
    evaluators too quick to be worth a process."""

    def __init__(self):
        self.done: deque[Outcome] = deque()

    def submit(self, task: Task) -> None:
        self.done.append(in_place(task))

    def next_done(self) -> Outcome:
        return self.done.popleft()


def in_place(task: Task) -> Outcome:
    """:func:`run_trial` in a process that outlives the trial (the driver's, a pool's worker): an
    evaluator that changes the process's folder (``os.chdir``) leaves it changed for the trials after
    it, whose relative paths (the work folder, the folder a callable is called from) would move with
    it. The folder is put back."""
    here = os.getcwd()
    try:
        return run_trial(task)
    finally:
        if os.getcwd() != here:
            os.chdir(here)


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)


class Pool(Executor):
    """A local pool of ``workers`` processes (started fresh, ``spawn``: no state copied from
    the driver), each trial on ``threads`` threads.

    A worker that dies (killed, out of memory, ``os._exit`` or a crash in native code) breaks the
    whole pool: Python fails every trial it was running. Those trials fail, and a new pool takes
    the trials after them."""

    def __init__(self, workers: int, threads: int):
        self.slots = workers
        self.threads = threads
        self.pool = self._start()
        #: each trial in flight: its task and the pool it runs in
        self.futures: dict = {}

    def _start(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(
            self.slots,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.threads,),
        )

    def _renew(self, broken) -> None:
        """A new pool in place of ``broken`` (unless one already replaced it)."""
        if broken is self.pool:
            broken.shutdown(wait=False, cancel_futures=True)
            self.pool = self._start()

    def submit(self, task: Task) -> None:
        from concurrent.futures.process import BrokenProcessPool

        try:
            future = self.pool.submit(in_place, task)
        except BrokenProcessPool:  # a worker died since the last trial finished
            self._renew(self.pool)
            future = self.pool.submit(in_place, task)
        self.futures[future] = (task, self.pool)

    def next_done(self) -> Outcome:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        done, _ = wait(self.futures, return_when=FIRST_COMPLETED)
        future = min(done, key=lambda f: self.futures[f][0].number)
        task, pool = self.futures.pop(future)
        try:
            return future.result()
        except BrokenProcessPool:
            self._renew(pool)
            return Outcome(
                task.number,
                error="the worker process died while it ran this trial or one beside it (killed, out of memory, "
                "os._exit, a crash in native code)",
                workdir=task.workdir,
            )
        except Exception as e:  # noqa: BLE001 - what a worker could not send back (a result that does not pickle)
            return Outcome(
                task.number, error=f"the worker process failed: {type(e).__name__}: {e}", workdir=task.workdir
            )

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


#: seconds a cluster named by HOST:PORT has to accept a connection before the search is refused
REACH_SECONDS = 5.0


def _reachable(address: str) -> None:
    """Refuse a ``HOST:PORT`` (or ``ray://HOST:PORT``) that accepts no connection within
    :data:`REACH_SECONDS`: Ray itself retries such an address for minutes before it gives up."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return  # auto, or a form Ray reads itself
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_SECONDS):
            pass
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__).lower()
        raise ExecutorError(
            f"cannot reach the Ray cluster at {address}: {why} within {REACH_SECONDS:g} s (is `ray start --head` "
            "running there, and the port open?)",
            path="--ray",
        ) from None


class Ray(Executor):
    """Trials as Ray tasks, each holding ``cpus`` CPUs and ``gpus`` GPUs of the cluster.

    ``address``: ``auto`` (the cluster this machine belongs to: ``ray start`` ran here),
    ``HOST:PORT`` or ``ray://HOST:PORT``, or ``local`` (a Ray instance started for this
    search on this machine, with ``workers * cpus`` CPUs). A process already connected
    to Ray (``ray.init`` before the search, in Python) keeps its connection. ``workers``
    bounds the trials in flight (default: what the cluster's CPUs and GPUs hold)."""

    def __init__(self, address: str, cpus: float, gpus: float, workers: int | None):
        try:
            import ray
        except ImportError:
            raise ExecutorError(
                "Ray is not installed: pip install 'nasdsl[search]' (or pip install ray)", path="--ray"
            ) from None
        self.ray = ray
        self.started = False
        self.pending: dict = {}
        if not ray.is_initialized():
            try:
                if address == "local":
                    ray.init(
                        num_cpus=max(1, round((workers or os.cpu_count() or 1) * cpus)),
                        include_dashboard=False,
                        log_to_driver=False,
                    )
                else:
                    _reachable(address)
                    ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ExecutorError(f"cannot connect to Ray at {address}: {first}", path="--ray") from None
            self.started = True
        resources = ray.cluster_resources()
        fits = int(resources.get("CPU", 0) // cpus) if cpus else None
        if gpus:
            by_gpu = int(resources.get("GPU", 0) // gpus)
            if by_gpu == 0:
                self.close()
                raise ExecutorError(
                    f"{gpus:g} asked, the Ray cluster has {resources.get('GPU', 0):g} GPUs",
                    path="--gpus-per-trial",
                )
            fits = by_gpu if fits is None else min(fits, by_gpu)
        if fits == 0:
            self.close()
            raise ExecutorError(
                f"{cpus:g} asked, the Ray cluster has {resources.get('CPU', 0):g} CPUs",
                path="--cpus-per-trial",
            )
        self.slots = workers or fits or 1
        self.remote = ray.remote(run_trial).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)

    def submit(self, task: Task) -> None:
        self.pending[self.remote.remote(task)] = task

    def next_done(self) -> Outcome:
        (ref,), _ = self.ray.wait(list(self.pending), num_returns=1)
        task = self.pending.pop(ref)
        try:
            return self.ray.get(ref)
        except Exception as e:  # noqa: BLE001 - the task's worker died (Ray reports it on get)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return Outcome(task.number, error=f"the Ray task failed: {type(e).__name__}: {first}", workdir=task.workdir)

    def close(self) -> None:
        for ref in self.pending:
            self.ray.cancel(ref, force=True)
        self.pending.clear()
        if self.started:
            self.ray.shutdown()
            self.started = False


__all__ = ["Executor", "ExecutorError", "Inline", "Pool", "Ray", "in_place"]
