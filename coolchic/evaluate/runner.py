"""Run a set of jobs into a run folder, resumably, on this machine or on a Ray cluster.

The driver (this process) decides which jobs remain (those without a finished row in the
:class:`~coolchic.evaluate.store.RunStore`), hands them to a backend, and saves each
outcome the moment it arrives. Backends only run :func:`coolchic.evaluate.jobs.run_job`:

- ``local``: in this process (``jobs=1``) or in a pool of ``jobs`` spawned processes,
  each limited to ``cpu_count // jobs`` threads.
- ``ray``: one Ray task per job (``num_cpus=cpus_per_task``, ``num_gpus=gpus_per_task``),
  on the cluster at ``ray_address`` or on a local Ray instance started for the run. Ray is
  the optional extra ``coolchic[ray]``.

A run interrupted at any point (Ctrl-C, kill -9) loses at most the jobs in flight.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Literal

from coolchic.evaluate.errors import EvaluationError
from coolchic.evaluate.jobs import Codec, Job, Outcome, run_job
from coolchic.evaluate.store import RunStore

RAY_MISSING = "--backend ray needs Ray: pip install 'coolchic[ray]'"
Backend = Literal["local", "ray"]
BACKENDS: tuple[str, ...] = ("local", "ray")


@dataclass(frozen=True)
class BackendOptions:
    """How to spread the jobs.

    Attributes:
        backend: ``local`` or ``ray``.
        jobs: local backend: jobs run at once (processes); 1 runs them in this process.
        ray_address: Ray cluster to join (``auto``, ``ray://host:10001``); None starts a
            local Ray instance (or uses the one already initialised in this process).
        cpus_per_task: CPUs Ray reserves for each task.
        gpus_per_task: GPUs Ray reserves for each task (e.g. 1 with ``--device cuda``).
    """

    backend: Backend = "local"
    jobs: int = 1
    ray_address: str | None = None
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise EvaluationError(
                f"unknown backend {self.backend!r}; choose from: {', '.join(BACKENDS)}"
            )
        if self.jobs < 1:
            raise EvaluationError(f"--jobs must be >= 1, got {self.jobs}")
        if self.cpus_per_task <= 0 or self.gpus_per_task < 0:
            raise EvaluationError("CPUs per task must be > 0 and GPUs per task >= 0")
        if self.backend == "ray" and importlib.util.find_spec("ray") is None:
            raise EvaluationError(RAY_MISSING)


def pending_jobs(jobs: Sequence[Job], store: RunStore) -> list[Job]:
    """The jobs with no finished row in the store, in their given order."""
    return [j for j in jobs if store.finished(j.codec, j.image, j.setting) is None]


def execute(
    jobs: Sequence[Job],
    codecs: dict[str, Codec],
    store: RunStore,
    options: BackendOptions,
    *,
    on_done: Callable[[Outcome], None] | None = None,
) -> int:
    """Run the given jobs and save each outcome as it arrives.

    Args:
        jobs: jobs to run (already filtered with :func:`pending_jobs`).
        codecs: codec name -> codec object for every ``job.codec``.
        store: where outcomes are saved.
        options: backend and its resources.
        on_done: called after each saved outcome (progress display).

    Returns:
        The number of jobs run. A failing job stops the run with its exception; the
        outcomes saved before it stay.
    """
    unknown = sorted({j.codec for j in jobs} - set(codecs))
    if unknown:
        raise EvaluationError(f"no codec object for: {', '.join(unknown)}")
    if options.backend == "ray":
        outcomes = _run_ray(jobs, codecs, options)
    elif options.jobs == 1:
        outcomes = (run_job(job, codecs[job.codec]) for job in jobs)
    else:
        outcomes = _run_pool(jobs, codecs, options.jobs)
    count = 0
    for outcome in outcomes:
        store.save(outcome.row, outcome.bitstream)
        count += 1
        if on_done is not None:
            on_done(outcome)
    return count


def _limit_threads(n_threads: int) -> None:
    """Pool initializer: share the cores between the workers instead of oversubscribing."""
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(n_threads)


def _run_pool(jobs: Sequence[Job], codecs: dict[str, Codec], n_workers: int) -> Iterator[Outcome]:
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    # spawn, not fork: a forked copy of a process that already runs torch threads can hang.
    pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=get_context("spawn"),
                               initializer=_limit_threads, initargs=(threads,))
    try:
        futures = {pool.submit(run_job, job, codecs[job.codec]) for job in jobs}
        while futures:
            done, futures = wait(futures, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_ray(jobs: Sequence[Job], codecs: dict[str, Codec], options: BackendOptions
             ) -> Iterator[Outcome]:
    try:
        import ray
    except ImportError:
        raise EvaluationError(RAY_MISSING) from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=options.ray_address, include_dashboard=False, log_to_driver=False)
    remote_job = ray.remote(num_cpus=options.cpus_per_task, num_gpus=options.gpus_per_task,
                            max_retries=0)(run_job)
    pending = [remote_job.remote(job, codecs[job.codec]) for job in jobs]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
