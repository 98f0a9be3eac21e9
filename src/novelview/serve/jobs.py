"""Job queue and the single worker thread that owns the model.

One worker runs jobs one at a time (the model is loaded once and is not shared between threads); submissions
wait in a bounded queue, and a full queue is refused at once (the HTTP layer answers ``429``) instead of
growing without limit. The worker never waits on a client: progress is published by bumping a version number
and waking watchers with ``loop.call_soon_threadsafe`` (non-blocking), and each watcher reads only the latest
state, so a slow or vanished client can neither stall the worker nor make a backlog grow.

Results live in ``<root>/<job id>/`` with names chosen by the runner; nothing here takes a path from a client.
Finished jobs are dropped (directory included) after ``ttl_s`` or when more than ``max_jobs`` are kept.

A job belongs to whoever holds its token (256 random bits, made at submission and handed only to the submitter):
:meth:`JobManager.owned` finds a job only together with its token, and nothing lists job ids.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import shutil
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from novelview.errors import NovelviewError

log = logging.getLogger("novelview.serve")

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
GENERIC_ERROR = "internal error while synthesizing; the server log has the details (job {id})"


class JobCancelled(Exception):
    """Raised from the progress callback to stop the pipeline at the next denoising step."""


class ShuttingDown(Exception):
    """Raised by :meth:`JobManager.submit` once the server has begun to stop."""


class QueueFull(Exception):
    def __init__(self, retry_after_s: int, queued: int) -> None:
        super().__init__(f"the queue is full ({queued} jobs waiting)")
        self.retry_after_s = retry_after_s
        self.queued = queued


@dataclass(frozen=True)
class ResultFile:
    name: str
    media_type: str
    kind: str


#: ``runner(job, progress) -> files`` does the work: it reads ``job.payload``, calls ``progress(done, total)``
#: once per denoising step and writes its files into ``job.directory``.
Runner = Callable[["Job", Callable[[int, int], None]], list[ResultFile]]


@dataclass(eq=False)
class Job:
    id: str
    payload: Any  # whatever the runner needs (parameters, preprocessed image); opaque here
    directory: Path
    seed: int
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    created_at: float = field(default_factory=time.time)
    status: str = QUEUED
    done: int = 0
    total: int = 0
    started_at: Optional[float] = None  # monotonic
    finished_at: Optional[float] = None  # monotonic
    error: Optional[str] = None
    files: dict[str, ResultFile] = field(default_factory=dict)
    version: int = 0
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass
class JobSnapshot:
    """A consistent copy of a job's state, taken under the manager's lock."""

    id: str
    status: str
    seed: int
    payload: Any
    done: int
    total: int
    queue_position: Optional[int]
    elapsed_s: Optional[float]
    eta_s: Optional[float]
    error: Optional[str]
    files: list[ResultFile]
    created_at: float
    version: int

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class _Watcher:
    """An asyncio.Event bound to the loop of the coroutine that waits on it."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def wake(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:  # the loop is closed: the client is gone; nothing to wake
            pass


class JobManager:
    """Bounded FIFO of jobs, one worker thread, cancellation, progress watchers, storage and cleanup."""

    def __init__(
        self,
        runner: Runner,
        root: Path,
        *,
        max_queue: int = 8,
        ttl_s: float = 3600.0,
        max_jobs: int = 100,
        cleanup_interval_s: float = 30.0,
        warmup: Optional[Callable[[], None]] = None,
    ) -> None:
        if max_queue < 1 or max_jobs < 1:
            raise ValueError("max_queue and max_jobs must be at least 1")
        self._runner = runner
        self.root = Path(root)
        self.max_queue = max_queue
        self.ttl_s = ttl_s
        self.max_jobs = max_jobs
        self._cleanup_interval_s = cleanup_interval_s
        self._warmup = warmup
        self._lock = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._queue: deque[Job] = deque()
        self._running: Optional[Job] = None
        self._watchers: dict[str, set[_Watcher]] = {}
        self._durations: deque[float] = deque(maxlen=20)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.ready = threading.Event()  # set once the warm-up run is over and jobs start running

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the worker (idempotent)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self.root.mkdir(parents=True, exist_ok=True)
            self._stop.clear()
            self._thread = threading.Thread(target=self._work, name="novelview-serve-worker", daemon=True)
            self._thread.start()

    def begin_shutdown(self) -> None:
        """Refuse new jobs and end every unfinished one as cancelled now, so progress streams get their last event.

        The running job stops at its next denoising step; its status is final already.
        """
        self._stop.set()
        with self._lock:
            for job in list(self._queue):
                self._finish(job, CANCELLED, "the server is shutting down")
            self._queue.clear()
            if self._running is not None:
                self._running.cancel_requested.set()
                self._finish(self._running, CANCELLED, "the server is shutting down")
            self._lock.notify_all()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Cancel everything, stop the worker and delete all results."""
        self.begin_shutdown()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        with self._lock:
            self._jobs.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def worker_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ submission and queries

    def submit(self, payload: Any, seed: Optional[int] = None) -> Job:
        """Queue a job or raise :class:`QueueFull` (or :class:`ShuttingDown`). ``seed=None`` draws one, so every
        result is reproducible."""
        if self._stop.is_set():
            raise ShuttingDown()
        self.start()  # no-op under the app's lifespan; covers apps driven without it
        job_id = uuid.uuid4().hex
        job = Job(
            id=job_id,
            payload=payload,
            directory=self.root / job_id,
            seed=secrets.randbelow(2**31) if seed is None else seed,
        )
        with self._lock:
            if len(self._queue) >= self.max_queue:
                raise QueueFull(self._retry_after_locked(), len(self._queue))
            self._jobs[job_id] = job
            self._queue.append(job)
            self._lock.notify_all()
        return job

    def owned(self, job_id: str, token: Optional[str]) -> Optional[Job]:
        """The job ``job_id`` if ``token`` is its token; None for an unknown job and a wrong token alike."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or not token or not hmac.compare_digest(token.encode(), job.token.encode()):
            return None
        return job

    def snapshot(self, job: Job) -> JobSnapshot:
        with self._lock:
            position = None
            if job.status == QUEUED:
                try:
                    position = self._queue.index(job) + (1 if self._running is not None else 0)
                except ValueError:
                    position = None
            elapsed = eta = None
            if job.started_at is not None:
                elapsed = (job.finished_at or time.monotonic()) - job.started_at
                if job.status == RUNNING and job.done > 0 and job.total > 0:
                    eta = elapsed / job.done * (job.total - job.done)
            return JobSnapshot(
                id=job.id,
                status=job.status,
                seed=job.seed,
                payload=job.payload,
                done=job.done,
                total=job.total,
                queue_position=position,
                elapsed_s=elapsed,
                eta_s=eta,
                error=job.error,
                files=list(job.files.values()),
                created_at=job.created_at,
                version=job.version,
            )

    def result_path(self, job: Job, name: str) -> Optional[Path]:
        """Path of a result file, only if ``name`` is one the runner produced for this job."""
        with self._lock:
            if job.status != SUCCEEDED or name not in job.files:
                return None
            return job.directory / job.files[name].name

    def stats(self) -> dict[str, int]:
        """Counts only: nothing lists job ids."""
        with self._lock:
            return {"queued": len(self._queue), "running": int(self._running is not None), "jobs": len(self._jobs)}

    def cancel(self, job: Job) -> str:
        """Cancel a queued job now or ask a running one to stop at its next step; returns the new status."""
        with self._lock:
            if job.status == QUEUED:
                try:
                    self._queue.remove(job)
                except ValueError:
                    pass
                self._finish(job, CANCELLED, "cancelled by the user")
            elif job.status == RUNNING:
                job.cancel_requested.set()
            return job.status

    def delete(self, job: Job) -> None:
        """Forget a finished job and delete its files."""
        with self._lock:
            if not job.terminal:
                raise ValueError("only finished jobs can be deleted")
            self._jobs.pop(job.id, None)
        shutil.rmtree(job.directory, ignore_errors=True)

    # ------------------------------------------------------------------ watching (async side)

    def watch(self, job: Job) -> _Watcher:
        """Register the calling coroutine for wake-ups on ``job`` changes; pair with :meth:`unwatch`."""
        watcher = _Watcher()
        with self._lock:
            self._watchers.setdefault(job.id, set()).add(watcher)
        return watcher

    def unwatch(self, job: Job, watcher: _Watcher) -> None:
        with self._lock:
            watchers = self._watchers.get(job.id)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._watchers[job.id]

    # ------------------------------------------------------------------ worker side

    def _changed_locked(self, job: Job) -> None:
        job.version += 1
        for watcher in self._watchers.get(job.id, ()):
            watcher.wake()

    def _finish(self, job: Job, status: str, error: Optional[str] = None) -> None:
        # Called with the lock held. A final status stays final (a job ended by begin_shutdown, then by its run).
        if job.terminal:
            return
        job.status = status
        job.error = error
        job.finished_at = time.monotonic()
        if job.started_at is None:
            job.started_at = job.finished_at
        self._changed_locked(job)

    def _progress_callback(self, job: Job) -> Callable[[int, int], None]:
        def progress(done: int, total: int) -> None:
            if job.cancel_requested.is_set() or self._stop.is_set():
                raise JobCancelled()
            with self._lock:
                job.done, job.total = int(done), int(total)
                self._changed_locked(job)

        return progress

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about one job's duration (when the next slot frees up)."""
        with self._lock:
            return self._retry_after_locked()

    def _retry_after_locked(self) -> int:
        mean = sum(self._durations) / len(self._durations) if self._durations else 5.0
        # The earliest a slot can free up is when the running job ends; ask for about that long.
        return int(min(300, max(1, round(mean))))

    def _work(self) -> None:
        if self._warmup is not None:
            # First-call costs (lazy imports, allocator, kernels) are paid here, not by the first user's job;
            # jobs submitted meanwhile simply wait in the queue.
            try:
                self._warmup()
            except Exception:  # noqa: BLE001 - a failed warm-up is logged; real jobs report their own errors
                log.warning("warm-up run failed", exc_info=True)
            self._warmup = None
        self.ready.set()
        while not self._stop.is_set():
            with self._lock:
                if not self._queue or self._stop.is_set():
                    self._lock.wait(timeout=self._cleanup_interval_s)
                    job = None
                else:
                    job = self._queue.popleft()
                    job.status = RUNNING
                    job.started_at = time.monotonic()
                    self._running = job
                    self._changed_locked(job)
            if job is None:
                self.cleanup()
                continue
            try:
                self._run(job)
            finally:
                with self._lock:
                    self._running = None
                    if job.started_at is not None and job.status == SUCCEEDED:
                        self._durations.append(time.monotonic() - job.started_at)
            self.cleanup()

    def _run(self, job: Job) -> None:
        """Run one job; every outcome (including our own bugs) becomes a job status, never a dead worker."""
        try:
            job.directory.mkdir(parents=True, exist_ok=True)
            files = self._runner(job, self._progress_callback(job))
            if job.cancel_requested.is_set():
                raise JobCancelled()
        except JobCancelled:
            outcome, error, files = CANCELLED, (
                "the server is shutting down" if self._stop.is_set() else "cancelled by the user"
            ), []
        except NovelviewError as err:
            outcome, error, files = FAILED, str(err), []
        except Exception:  # noqa: BLE001 - a bug must fail this job, not kill the worker for everyone
            log.exception("job %s failed", job.id)
            outcome, error, files = FAILED, GENERIC_ERROR.format(id=job.id), []
        else:
            outcome, error = SUCCEEDED, None
        with self._lock:
            if job.terminal:  # ended by begin_shutdown meanwhile: whatever the run produced is not kept
                outcome, files = job.status, []
        if outcome != SUCCEEDED:
            shutil.rmtree(job.directory, ignore_errors=True)
        with self._lock:
            job.files = {f.name: f for f in files}
            job.payload = _drop_heavy(job.payload)
            self._finish(job, outcome, error)

    # ------------------------------------------------------------------ cleanup

    def cleanup(self) -> None:
        """Drop finished jobs older than ``ttl_s`` and the oldest ones beyond ``max_jobs``."""
        now = time.monotonic()
        with self._lock:
            finished = sorted((j for j in self._jobs.values() if j.terminal), key=lambda j: j.finished_at or 0.0)
            expired = [j for j in finished if now - (j.finished_at or now) > self.ttl_s]
            keep = [j for j in finished if j not in expired]
            excess = len(self._jobs) - len(expired) - self.max_jobs
            if excess > 0:
                expired += keep[:excess]
            for job in expired:
                self._jobs.pop(job.id, None)
        for job in expired:
            shutil.rmtree(job.directory, ignore_errors=True)


def _drop_heavy(payload: Any) -> Any:
    """Finished jobs keep their parameters but not the input image (memory stays bounded by ``max_jobs``)."""
    drop = getattr(payload, "without_image", None)
    return drop() if callable(drop) else payload
