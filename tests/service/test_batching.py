"""The micro-batcher: concurrent jobs share one call in the worker thread, split back per job, in order."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import polars as pl
import pytest

from pipelines.service.batching import FraudScoring, MicroBatcher, score_fraud_batch
from pipelines.service.mlflow_source import ClaimScores


class Recorder:
    """A batch function that doubles its payloads and records every call (and the thread it ran in)."""

    def __init__(self, delay: float = 0.0, fail_on: int | None = None) -> None:
        self.calls: list[tuple[Hashable, list[int]]] = []
        self.threads: set[str] = set()
        self.delay = delay
        self.fail_on = fail_on

    def __call__(self, key: Hashable, payloads: Sequence[int]) -> list[int]:
        self.calls.append((key, list(payloads)))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in payloads:
            raise ValueError(f"cannot take {self.fail_on}")
        return [2 * p for p in payloads]


def test_concurrent_jobs_share_one_call_in_the_worker_thread() -> None:
    run = Recorder()
    batcher = MicroBatcher(run, max_items=32, max_wait_s=0.002, name="test")

    async def main() -> list[int]:
        return await asyncio.gather(*(batcher.submit("k", i) for i in range(10)))

    assert asyncio.run(main()) == [2 * i for i in range(10)]
    assert run.calls == [("k", list(range(10)))]
    assert run.threads == {"shipa-test_0"}
    assert (batcher.batches, batcher.jobs, batcher.largest) == (1, 10, 10)
    batcher.close()


def test_keys_and_the_size_cap_split_batches_in_arrival_order() -> None:
    run = Recorder()
    batcher = MicroBatcher(run, max_items=10, max_wait_s=0.0)

    async def main() -> list[int]:
        jobs = [("a", 1, 4), ("b", 2, 1), ("a", 3, 4), ("a", 4, 4), ("a", 5, 1), ("b", 6, 1)]
        return await asyncio.gather(*(batcher.submit(key, p, size) for key, p, size in jobs))

    assert asyncio.run(main()) == [2, 4, 6, 8, 10, 12]
    # 4 + 4 claims fit, the third "a" job would pass 10: it waits for the next call (no overtaking by job 5)
    assert run.calls == [("a", [1, 3]), ("b", [2, 6]), ("a", [4, 5])]


def test_a_job_larger_than_the_cap_goes_alone() -> None:
    run = Recorder()
    batcher = MicroBatcher(run, max_items=2, max_wait_s=0.0)

    async def main() -> list[int]:
        return await asyncio.gather(batcher.submit("k", 1, 5), batcher.submit("k", 2, 1))

    assert asyncio.run(main()) == [2, 4]
    assert run.calls == [("k", [1]), ("k", [2])]


def test_a_lone_job_never_waits_for_the_batch_window() -> None:
    batcher = MicroBatcher(Recorder(), max_items=32, max_wait_s=5.0)

    async def main() -> float:
        started = time.perf_counter()
        assert await batcher.submit("k", 21) == 42
        return time.perf_counter() - started

    assert asyncio.run(main()) < 1.0


def test_an_idle_worker_waits_for_incoming_requests_within_the_window() -> None:
    run = Recorder()
    batcher = MicroBatcher(run, max_items=32, max_wait_s=2.0)

    async def late(payload: int) -> int:
        with batcher.incoming():  # still reading its request
            await asyncio.sleep(0.05)
        return await batcher.submit("k", payload)

    async def main() -> list[int]:
        return await asyncio.gather(batcher.submit("k", 1), late(2), late(3))

    started = time.perf_counter()
    assert asyncio.run(main()) == [2, 4, 6]
    assert run.calls == [("k", [1, 2, 3])]
    assert time.perf_counter() - started < 1.5  # the window closed when nobody was incoming any more


def test_the_window_is_bounded_by_max_wait() -> None:
    run = Recorder()
    batcher = MicroBatcher(run, max_items=32, max_wait_s=0.01)

    async def slow() -> int:
        with batcher.incoming():
            await asyncio.sleep(0.3)
        return await batcher.submit("k", 2)

    async def main() -> list[int]:
        return await asyncio.gather(batcher.submit("k", 1), slow())

    assert asyncio.run(main()) == [2, 4]
    assert run.calls == [("k", [1]), ("k", [2])]


def test_a_failing_job_fails_alone() -> None:
    run = Recorder(fail_on=3)
    batcher = MicroBatcher(run, max_items=32, max_wait_s=0.0)

    async def main() -> list[int | BaseException]:
        return await asyncio.gather(*(batcher.submit("k", i) for i in range(5)), return_exceptions=True)

    results = asyncio.run(main())
    assert results[:3] == [0, 2, 4] and results[4] == 8
    assert isinstance(results[3], ValueError) and "cannot take 3" in str(results[3])
    assert run.calls[0] == ("k", [0, 1, 2, 3, 4]) and len(run.calls) == 6  # the batch, then each job alone


def test_the_batcher_works_across_event_loops() -> None:
    batcher = MicroBatcher(Recorder(delay=0.001), max_items=4, max_wait_s=0.001)

    async def main(base: int) -> list[int]:
        return await asyncio.gather(*(batcher.submit("k", base + i) for i in range(6)))

    assert asyncio.run(main(0)) == [0, 2, 4, 6, 8, 10]
    assert asyncio.run(main(10)) == [20, 22, 24, 26, 28, 30]


def test_small_calls_run_on_the_event_loop_and_large_ones_in_the_worker() -> None:
    run = Recorder()
    batcher = MicroBatcher(run, max_items=8, max_wait_s=0.0, name="inline", inline_max_items=4)

    async def main() -> tuple[list[int], str]:
        small = await asyncio.gather(*(batcher.submit("k", i) for i in range(3)))  # one call of 3 items
        large = await batcher.submit("k", 10, size=6)  # one job of 6 items
        return [*small, large], threading.current_thread().name

    answers, loop_thread = asyncio.run(main())
    assert answers == [0, 2, 4, 20]
    assert run.calls == [("k", [0, 1, 2]), ("k", [10])]
    assert run.threads == {loop_thread, "shipa-inline_0"}
    batcher.close()


def test_fraud_scoring_handles_small_bodies_on_the_loop_and_large_ones_in_threads() -> None:
    scoring = FraudScoring(max_claims=8, max_wait_ms=1, inline_max_bytes=100)
    assert scoring.inline(b"x" * 100) and not scoring.inline(b"x" * 101)
    assert scoring.batcher.inline_max_items == 8  # every call of up to max_claims claims stays on the loop

    async def where(inline: bool) -> str:
        return await scoring.run(lambda: threading.current_thread().name, inline=inline)

    async def main() -> tuple[str, str, str]:
        return await where(True), await where(False), threading.current_thread().name

    on_loop, in_thread, loop_thread = asyncio.run(main())
    assert on_loop == loop_thread and in_thread.startswith("shipa-fraud-request")
    scoring.close()
    assert FraudScoring(max_claims=8, max_wait_ms=1).batcher.inline_max_items == 0  # 0 bytes: all in threads


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_items=0, max_wait_s=0.001)
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_items=1, max_wait_s=-1.0)
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_items=1, max_wait_s=0.0, inline_max_items=-1)
    with pytest.raises(ValueError):
        FraudScoring(max_claims=1, max_wait_ms=0, inline_max_bytes=-1)


@dataclass
class StubModel:
    """Scores a claim by its amount; ``rows_independent`` says whether claims may share a call."""

    rows_independent: bool = True

    def score(self, records: pl.DataFrame) -> ClaimScores:
        amounts = records["total"].to_list()
        return ClaimScores([a / 1000 for a in amounts], [({"code": f"C{a}"},) for a in amounts], [() for _ in amounts])


def test_fraud_scoring_concatenates_requests_and_splits_their_answers() -> None:
    model = StubModel()
    requests = [pl.DataFrame({"claim_id": [f"c{i}"] * (i + 1), "total": [float(i)] * (i + 1)}) for i in range(4)]
    scoring = FraudScoring(max_claims=100, max_wait_ms=1)

    async def main() -> list[ClaimScores]:
        return await asyncio.gather(*(scoring.score(model, r) for r in requests))  # type: ignore[arg-type]

    answers = asyncio.run(main())
    assert [len(a) for a in answers] == [1, 2, 3, 4]
    for i, answer in enumerate(answers):
        assert answer == model.score(requests[i])
    assert scoring.batcher.largest == 4
    # different columns or types never share a call (concatenating would cast); neither do dependent models
    odd = requests[0].with_columns(pl.col("total").cast(pl.Float32))
    lone = StubModel(rows_independent=False)

    async def mixed() -> list[ClaimScores]:
        return await asyncio.gather(
            scoring.score(model, requests[1]),  # type: ignore[arg-type]
            scoring.score(model, odd),  # type: ignore[arg-type]
            scoring.score(lone, requests[2]),  # type: ignore[arg-type]
            scoring.score(lone, requests[3]),  # type: ignore[arg-type]
        )

    before = scoring.batcher.batches
    assert [len(a) for a in asyncio.run(mixed())] == [2, 1, 3, 4]
    assert scoring.batcher.batches - before == 4
    scoring.close()


def test_score_fraud_batch_splits_in_order() -> None:
    model = StubModel()
    frames = [pl.DataFrame({"total": [1.0, 2.0]}), pl.DataFrame({"total": [3.0]})]
    out = score_fraud_batch("k", [(model, f) for f in frames])  # type: ignore[misc]
    assert [a.probabilities for a in out] == [[0.001, 0.002], [0.003]]
