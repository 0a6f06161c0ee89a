"""The sampler stage: batch ``j`` of the global stream as (bucket, manifest rows), from the population alone.

* **Resampled** (infinite): batch ``j`` takes its bucket from a schedule cut in blocks of
  ``SCHEDULE_BLOCK`` batches, each block allocated to buckets by systematic sampling over the bucket
  weights, then draws ``batch_size`` rows with replacement within the bucket by weight.
* **One pass**: an epoch of ``epoch_draws`` draws whose per-sample counts are the expected counts
  rounded by systematic sampling (or one per sample when the weights are equal), shuffled within
  each bucket, cut into batches, batches shuffled.

Batch ``j`` is a pure function of (population, seed, j): its generator is ``draw_rng(seed, tag, j)``.
"""

from __future__ import annotations

import numpy as np

from .population import Population

SCHEDULE_BLOCK = 64  # batches per bucket-schedule block
# Stream tags of the counter-based RNG: draw_rng(seed, TAG, j) is independent for every (tag, j).
BLOCK, BATCH, EXTRACTOR, EPOCH = 1, 2, 3, 4


def draw_rng(seed: int, tag: int, index: int) -> np.random.Generator:
    """The generator of draw ``index`` of stream ``tag``: the same for the same three numbers, anywhere."""
    return np.random.default_rng([seed, tag, index])


def systematic_counts(weights: np.ndarray, total: int, u: float) -> np.ndarray:
    """Counts summing to ``total``, each the floor or ceiling of ``total * w / Σw``; unbiased over u ~ U[0, 1)."""
    cum = np.cumsum(weights, dtype=np.float64)
    cum *= total / cum[-1]
    points = u + np.arange(total)
    picked = np.minimum(np.searchsorted(cum, points, side="right"), len(weights) - 1)
    return np.bincount(picked, minlength=len(weights))


def draw_in_bucket(pop: Population, bucket: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows of ``bucket``, with replacement, each in proportion to its weight."""
    cum = pop.cumulative[bucket]
    at = np.searchsorted(cum, rng.random(n) * cum[-1], side="right")
    return pop.members[bucket][np.minimum(at, len(cum) - 1)]


class Sampler:
    """The global batch sequence: ``batch(j) -> (bucket, rows)``, or None past the end of a pass."""

    def __init__(self, pop: Population, batch_size: int, *, seed: int = 0, resampled: bool = True,
                 epoch: int = 0, epoch_draws: int | None = None, drop_last: bool | None = None) -> None:  # fmt: skip
        self.pop, self.batch_size, self.seed, self.resampled = pop, batch_size, seed, resampled
        self.drop_last = resampled if drop_last is None else drop_last
        self._block: tuple[int, np.ndarray] | None = None
        self.total: int | None = None  # batches in one pass; None: infinite
        if not resampled:
            self._one_pass(epoch, epoch_draws, self.drop_last)

    def _one_pass(self, epoch: int, epoch_draws: int | None, drop_last: bool) -> None:
        pop = self.pop
        rng = draw_rng(self.seed, EPOCH, epoch)
        draws = len(pop) if epoch_draws is None else epoch_draws
        if epoch_draws is None and np.all(pop.weights == pop.weights[0]):
            counts = np.ones(len(pop), np.int64)
        else:
            counts = systematic_counts(pop.weights, draws, float(rng.random()))
        batches: list[tuple[int, np.ndarray]] = []
        for b, members in enumerate(pop.members):
            rows = np.repeat(members, counts[members])
            rows = rows[rng.permutation(len(rows))]
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                if len(chunk) == self.batch_size or not drop_last:
                    batches.append((b, chunk))
        self.batches = [batches[i] for i in rng.permutation(len(batches))]
        self.total = len(self.batches)

    def bucket_schedule(self, block: int) -> np.ndarray:
        """The bucket of each batch of schedule block ``block``."""
        if self._block is None or self._block[0] != block:
            rng = draw_rng(self.seed, BLOCK, block)
            counts = systematic_counts(self.pop.bucket_weight, SCHEDULE_BLOCK, float(rng.random()))
            slots = np.repeat(np.arange(len(counts)), counts)
            self._block = (block, slots[rng.permutation(SCHEDULE_BLOCK)])
        return self._block[1]

    def batch(self, j: int) -> tuple[int, np.ndarray] | None:
        """(bucket index, manifest rows) of global batch ``j``; None past the end of a pass."""
        if not self.resampled:
            return self.batches[j] if j < self.total else None
        bucket = int(self.bucket_schedule(j // SCHEDULE_BLOCK)[j % SCHEDULE_BLOCK])
        return bucket, draw_in_bucket(self.pop, bucket, self.batch_size, draw_rng(self.seed, BATCH, j))


__all__ = ["SCHEDULE_BLOCK", "Sampler", "draw_in_bucket", "draw_rng", "systematic_counts"]
