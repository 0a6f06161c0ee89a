"""One progress bar per phase (count, rate, ETA) on stderr; silent when disabled."""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    def __init__(self, phase: str, total: int | None, unit: str, enabled: bool = True):
        self._bar = tqdm(
            total=total,
            desc=f"{phase:<11}",
            unit=f" {unit}",
            disable=not enabled,
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.5,
        )
        self._kept = 0

    def update(self, n: int, kept: int | None = None) -> None:
        if kept is not None:
            self._kept += kept
            self._bar.set_postfix(kept=self._kept, refresh=False)
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()
