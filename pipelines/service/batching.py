"""Micro-batching: the model calls of concurrent requests merged into one call, one call at a time.

A request builds its model input, then awaits :meth:`MicroBatcher.submit`. Jobs queue on the event loop; one
dispatcher task runs them in arrival order: everything queued under one key (up to ``max_items``) goes in one
call as soon as the previous call has ended, so while a call runs the next batch fills up. When the model is
idle, the dispatcher waits at most ``max_wait_s`` for requests that are still being read and checked in a thread
(:meth:`MicroBatcher.incoming`) to join; with none of those, a job goes at once, so a lone client never waits. One
call at a time: on a CPU with the numeric thread count set (``SHIPA_SERVICE_THREADS``) that is all the cores can
do, and on a GPU the batch is what keeps the device busy.

A call of at most ``inline_max_items`` items runs on the event loop itself; a larger one in the worker thread, so
the loop keeps serving while it runs. Small calls stay on the loop because handing work to a thread and back costs
more than a small call: each hand-over wakes a thread that must then win the interpreter lock (up to the 5 ms
switch interval while another thread holds it).

A batch that fails is run again job by job, so one bad request cannot fail the others.

:class:`FraudScoring` is the fraud endpoint's batcher: the claim records of concurrent requests are concatenated,
scored in one call and split back per request; each request then writes its own audit record and answer. Small
requests are read, checked and answered on the event loop too; large ones in one of two request threads (see
:data:`REQUEST_THREADS` and :meth:`FraudScoring.inline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from fastapi import Request

if TYPE_CHECKING:
    import polars as pl

    from pipelines.service.mlflow_source import ClaimScores, DiagnosisModel, FraudModel
    from pipelines.service.settings import ServiceSettings

log = logging.getLogger(__name__)

P = TypeVar("P")
R = TypeVar("R")
# Threads that read, check and answer large fraud requests. Python runs one thread at a time: more threads would not do
# more work, they would take the interpreter from the model worker and the event loop more often (every switch
# costs the thread that waits up to the 5 ms switch interval), which stretched model calls and latencies.
REQUEST_THREADS = 2


@dataclass(eq=False)
class _Job(Generic[P, R]):
    key: Hashable
    payload: P
    size: int
    future: asyncio.Future[R]
    arrived: float
    result: Any = None
    error: BaseException | None = field(default=None)


class MicroBatcher(Generic[P, R]):
    """Runs ``run(key, payloads) -> results`` (one result per payload) on batches of concurrent jobs.

    Args:
        run: called with the payloads of jobs of one key, in arrival order (on the loop or in the worker thread).
        max_items: most items (the ``size`` of each job) in one call; a larger job goes alone.
        max_wait_s: how long an idle worker waits for incoming requests to join a batch.
        name: the worker thread's name (``shipa-<name>``).
        inline_max_items: calls of at most this many items run on the event loop (0: every call in the thread).

    Attributes:
        batches: calls made so far; ``jobs``: jobs answered; ``largest``: most jobs in one call.
    """

    def __init__(
        self,
        run: Callable[[Hashable, Sequence[P]], Sequence[R]],
        *,
        max_items: int,
        max_wait_s: float,
        name: str = "batch",
        inline_max_items: int = 0,
    ) -> None:
        if max_items < 1 or max_wait_s < 0 or inline_max_items < 0:
            raise ValueError("max_items must be >= 1, max_wait_s >= 0 and inline_max_items >= 0")
        self._run = run
        self.max_items = max_items
        self.max_wait_s = max_wait_s
        self.inline_max_items = inline_max_items
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"shipa-{name}")
        self._queue: deque[_Job[P, R]] = deque()
        self._incoming = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self.batches = 0
        self.jobs = 0
        self.largest = 0

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Announce, for the duration of the block, a request that will submit a job soon (call on the loop)."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1
            self._notify()

    async def submit(self, key: Hashable, payload: P, size: int = 1) -> R:
        """Queue one job and wait for its result (its ``run`` exception is raised here).

        Jobs share a call only with jobs of an equal ``key``.
        """
        loop = self._bind()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append(_Job(key, payload, max(1, size), future, loop.time()))
        self._notify()
        if self._dispatcher is None:
            self._dispatcher = loop.create_task(self._dispatch())
        return await future

    def close(self) -> None:
        """Stop the worker thread once its current call ends (queued jobs are not run)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests start several): nothing of the old one carries over
            self._loop, self._wake, self._dispatcher = loop, asyncio.Event(), None
            self._queue.clear()
        return loop

    def _notify(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                await self._gather(loop)
                batch = self._take()
                if not batch:
                    continue
                if sum(job.size for job in batch) <= self.inline_max_items:
                    self._execute(batch)
                else:
                    await loop.run_in_executor(self._executor, self._execute, batch)
                for job in batch:
                    if job.future.done():  # the request was cancelled meanwhile
                        continue
                    if job.error is not None:
                        job.future.set_exception(job.error)
                    else:
                        job.future.set_result(job.result)
                await asyncio.sleep(0)  # let the answered requests and those already read run before the next call
        except BaseException as exc:  # never leave a request waiting for an answer that cannot come
            for job in self._queue:
                if not job.future.done():
                    job.future.set_exception(RuntimeError("the batch worker stopped"))
            self._queue.clear()
            if not isinstance(exc, Exception):
                raise
            log.error("batch dispatcher failed: %s", type(exc).__name__)
        finally:
            self._dispatcher = None

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait, up to the first job's deadline, while requests that could join are still incoming."""
        deadline = self._queue[0].arrived + self.max_wait_s
        while self._incoming > 0 and self._queued_items() < self.max_items:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._wake is None:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    def _queued_items(self) -> int:
        key = self._queue[0].key
        return sum(job.size for job in self._queue if job.key == key)

    def _take(self) -> list[_Job[P, R]]:
        """The next batch: queued jobs of the first job's key, in order, up to ``max_items`` (at least one)."""
        key = self._queue[0].key
        taken: list[_Job[P, R]] = []
        kept: deque[_Job[P, R]] = deque()
        total, full = 0, False
        for job in self._queue:
            if job.future.done():  # cancelled while queued
                continue
            if job.key == key and not full and (not taken or total + job.size <= self.max_items):
                taken.append(job)
                total += job.size
            else:
                full = full or job.key == key
                kept.append(job)
        self._queue = kept
        return taken

    def _execute(self, batch: list[_Job[P, R]]) -> None:
        """Run one batch (on the loop or in the worker thread); on failure run each job alone."""
        self.batches += 1
        self.jobs += len(batch)
        self.largest = max(self.largest, len(batch))
        try:
            results = self._run(batch[0].key, [job.payload for job in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"the batch function gave {len(results)} results for {len(batch)} jobs")
            for job, result in zip(batch, results, strict=True):
                job.result = result
            return
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
        for job in batch:
            try:
                job.result = self._run(job.key, [job.payload])[0]
            except Exception as exc:
                job.error = exc


# --- fraud scoring ------------------------------------------------------------------------------------------


def score_fraud_batch(_key: Hashable, payloads: Sequence[tuple[FraudModel, pl.DataFrame]]) -> list[ClaimScores]:
    """Score the claim records of several requests (one model, one schema) in one call; split per request."""
    import polars as pl

    model = payloads[0][0]
    frames = [records for _, records in payloads]
    scored = model.score(frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical"))
    out, start = [], 0
    for frame in frames:
        out.append(scored.rows(start, start + frame.height))
        start += frame.height
    return out


class FraudScoring:
    """Fraud scoring of concurrent requests in shared model calls (see the module docstring).

    Requests share a call only when they are scored by the same model object, their records have the same
    columns and types (so concatenating them casts nothing), and the model scores each record independently
    of the others (:attr:`~pipelines.service.mlflow_source.FraudModel.rows_independent`). Scores then equal
    those of the request scored alone, to the float64 rounding of the network's matrix products (which may
    depend on how many rows one product holds: below 1e-12 of a probability).

    Args:
        max_claims: most claims in one model call.
        max_wait_ms: how long an idle model waits for requests still being read in a thread.
        inline_max_bytes: requests with bodies up to this size are read, checked and answered on the event loop,
            and model calls of up to ``max_claims`` claims run there too (0: everything in threads).
        request_threads: threads for the larger requests.
    """

    def __init__(
        self, *, max_claims: int, max_wait_ms: float, inline_max_bytes: int = 0, request_threads: int = REQUEST_THREADS
    ) -> None:
        if inline_max_bytes < 0:
            raise ValueError("inline_max_bytes must be >= 0")
        self.inline_max_bytes = inline_max_bytes
        self.batcher: MicroBatcher[tuple[FraudModel, pl.DataFrame], ClaimScores] = MicroBatcher(
            score_fraud_batch,
            max_items=max_claims,
            max_wait_s=max_wait_ms / 1000.0,
            name="fraud-scoring",
            inline_max_items=max_claims if inline_max_bytes else 0,
        )
        self._requests = ThreadPoolExecutor(max_workers=request_threads, thread_name_prefix="shipa-fraud-request")

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> FraudScoring:
        """With ``SHIPA_SERVICE_BATCH_MAX_CLAIMS``, ``SHIPA_SERVICE_BATCH_MAX_WAIT_MS`` and
        ``SHIPA_SERVICE_INLINE_MAX_BYTES``."""
        return cls(
            max_claims=settings.batch_max_claims,
            max_wait_ms=settings.batch_max_wait_ms,
            inline_max_bytes=settings.inline_max_bytes,
        )

    def inline(self, body: bytes) -> bool:
        """Whether a request with this body is handled on the event loop (a few claims: a millisecond or two of
        work, less than the hand-over to a thread costs) rather than in a request thread."""
        return len(body) <= self.inline_max_bytes

    def incoming(self) -> contextlib.AbstractContextManager[None]:
        """Wrap the reading and checking of a request that will be scored (see :meth:`MicroBatcher.incoming`)."""
        return self.batcher.incoming()

    async def score(self, model: FraudModel, records: pl.DataFrame) -> ClaimScores:
        """The model's scores and reasons of ``records``, computed together with concurrent requests' records."""
        key: Hashable = (
            (id(model), tuple(records.columns), tuple(records.dtypes)) if model.rows_independent else object()
        )
        return await self.batcher.submit(key, (model, records), records.height)

    async def run(self, fn: Callable[..., R], *args: Any, inline: bool = False) -> R:
        """``fn(*args)``: here on the event loop when ``inline``, else in one of the request threads (reading,
        checking and answering a request, the audit write)."""
        if inline:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._requests, functools.partial(fn, *args))

    def close(self) -> None:
        """Stop the worker threads."""
        self.batcher.close()
        self._requests.shutdown(wait=False, cancel_futures=True)


B = TypeVar("B")


def _app_batcher(request: Request, name: str, make: Callable[[ServiceSettings], B]) -> B:
    """``app.state.<name>``, made from the app's settings on first use (and again after a shutdown closed it)."""
    state = request.app.state
    batcher = getattr(state, name, None)
    if batcher is None:
        batcher = make(state.settings)
        setattr(state, name, batcher)
    return batcher


async def fraud_scoring(request: Request) -> FraudScoring:
    """The app's fraud batcher (``app.state.fraud_scoring``)."""
    return _app_batcher(request, "fraud_scoring", FraudScoring.from_settings)


# --- diagnosis ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiagnosisScore:
    """The pyfunc's answer for one study: the calibrated probability, the positive call and, for a model that
    reads the image, its out-of-distribution score and whether it is above the model's threshold."""

    probability: float
    positive: bool
    ood_score: float | None = None
    out_of_distribution: bool = False


def score_diagnosis_batch(
    _key: Hashable, payloads: Sequence[tuple[DiagnosisModel, dict[str, Any]]]
) -> list[DiagnosisScore]:
    """Predict the model rows (EHR values and the image) of several requests in one call of the registered pyfunc."""
    import pandas as pd

    from pipelines.tracking.pyfunc_diagnosis import OOD_SCORE, OUT_OF_DISTRIBUTION

    model = payloads[0][0]
    columns = list(payloads[0][1])
    frame = pd.DataFrame({c: [row[c] for _, row in payloads] for c in columns})
    out = model.predict(frame)
    n = len(out)
    ood = out[OOD_SCORE].tolist() if OOD_SCORE in out.columns else [None] * n
    refused = out[OUT_OF_DISTRIBUTION].tolist() if OUT_OF_DISTRIBUTION in out.columns else [False] * n
    return [
        DiagnosisScore(float(p), bool(q), None if o is None else float(o), bool(r))
        for p, q, o, r in zip(out["probability"], out["positive"], ood, refused, strict=True)
    ]


class DiagnosisScoring:
    """The diagnosis route's batcher: images of concurrent requests go through the network in one call.

    Each request is decoded, de-identified and preprocessed in its own thread (the route is synchronous); the model
    call runs in the batcher's worker thread, where requests that arrived while the previous call ran share the next
    one (at most ``max_images``). On a GPU the batches are meant to keep the device busy (not yet measured on one);
    on a CPU a lone request goes at once.
    Rows of one model with the same columns share a call; the network scores each image independently (eval mode).
    """

    def __init__(self, *, max_images: int) -> None:
        # No batch window: uploads are read in AnyIO's threads, which never announce themselves as incoming
        # (MicroBatcher.incoming runs on the loop), so a window would never be waited for.
        self.batcher: MicroBatcher[tuple[DiagnosisModel, dict[str, Any]], DiagnosisScore] = MicroBatcher(
            score_diagnosis_batch, max_items=max_images, max_wait_s=0.0, name="diagnosis"
        )

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> DiagnosisScoring:
        """With ``SHIPA_SERVICE_BATCH_MAX_IMAGES``."""
        return cls(max_images=settings.batch_max_images)

    async def predict(self, model: DiagnosisModel, row: dict[str, Any]) -> DiagnosisScore:
        """The pyfunc's answer for one model row (its columns: see the diagnosis pyfunc)."""
        return await self.batcher.submit((id(model), tuple(row)), (model, row))

    def close(self) -> None:
        """Stop the worker thread."""
        self.batcher.close()


async def diagnosis_scoring(request: Request) -> DiagnosisScoring:
    """The app's diagnosis batcher (``app.state.diagnosis_scoring``)."""
    return _app_batcher(request, "diagnosis_scoring", DiagnosisScoring.from_settings)
