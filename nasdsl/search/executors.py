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
    whole pool: Python fails every trial it was running, and cannot say which one killed it. A new
    pool takes over, and the trials that were running are *suspects*: each is run again alone, one
    after the other, before anything else is sent. A suspect that dies alone is the one that killed
    the pool (its trial fails; it is never run a third time); the others run as if nothing had
    happened, so one bad variant fails one trial, not the trials beside it."""

    def __init__(self, workers: int, threads: int):
        self.slots = workers
        self.threads = threads
        self.pool = self._start()
        #: each trial in flight: its task, the pool it runs in, and whether it runs alone (a suspect)
        self.futures: dict = {}
        #: trials submitted and not sent yet (held while suspects run), and the suspects to run alone
        self.waiting: deque[Task] = deque()
        self.suspects: deque[Task] = deque()
        #: outcomes decided without a run (a suspect that died alone), returned before waiting again
        self.decided: deque[Outcome] = deque()

    def _start(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(
            self.slots,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.threads,),
        )

    def _send(self, task: Task, alone: bool) -> None:
        from concurrent.futures.process import BrokenProcessPool

        try:
            future = self.pool.submit(in_place, task)
        except BrokenProcessPool:  # a worker died since the last trial finished
            self._broken(self.pool)
            future = self.pool.submit(in_place, task)
        self.futures[future] = (task, self.pool, alone)

    def _fill(self) -> None:
        """Send what may run now: the next suspect alone, or the waiting trials when none is left."""
        if self.suspects:
            if not self.futures:
                self._send(self.suspects.popleft(), alone=True)
            return
        while self.waiting and len(self.futures) < self.slots:
            self._send(self.waiting.popleft(), alone=False)

    def _broken(self, broken) -> None:
        """Replace ``broken`` (unless done already); its trials still running become suspects, in
        the order they were submitted."""
        if broken is not self.pool:
            return
        lost = sorted(
            (f for f, (_, pool, _) in self.futures.items() if pool is broken and not _finished(f)),
            key=lambda f: self.futures[f][0].number,
        )
        tasks = [(task, alone) for task, _, alone in (self.futures.pop(f) for f in lost)]
        for task, alone in tasks:
            if alone or len(tasks) == 1:  # it ran alone: this one killed the pool
                self.decided.append(_died(task))
            else:
                self.suspects.append(task)
        broken.shutdown(wait=False, cancel_futures=True)
        self.pool = self._start()

    def submit(self, task: Task) -> None:
        self.waiting.append(task)
        self._fill()

    def next_done(self) -> Outcome:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        while True:
            if self.decided:
                self._fill()
                return self.decided.popleft()
            self._fill()
            done, _ = wait(self.futures, return_when=FIRST_COMPLETED)
            future = min(done, key=lambda f: self.futures[f][0].number)
            task, pool, alone = self.futures[future]
            try:
                outcome = future.result()
            except BrokenProcessPool:
                self._broken(pool)  # this trial is a suspect now (or decided, when it ran alone)
                continue
            except Exception as e:  # noqa: BLE001 - what a worker could not send back (a result that does not pickle)
                outcome = Outcome(
                    task.number, error=f"the worker process failed: {type(e).__name__}: {e}", workdir=task.workdir
                )
            del self.futures[future]
            self._fill()
            return outcome

    def close(self) -> None:
        self.waiting.clear()
        self.suspects.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _finished(future) -> bool:
    """Whether ``future`` holds its trial's outcome (sent back before the pool broke)."""
    return future.done() and not future.cancelled() and future.exception() is None


def _died(task: Task) -> Outcome:
    return Outcome(
        task.number,
        error="the worker process died while it ran this trial alone (killed, out of memory, os._exit, a crash in "
        "native code)",
        workdir=task.workdir,
    )


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
