"""Bad-sample accounting shared by every loader backend (torch and DALI)."""
from __future__ import annotations

import logging

from fastvid.errors import DataError

__all__ = ["BadSampleLog"]

log = logging.getLogger(__name__)


class BadSampleLog:
    """Distinct samples that failed this epoch; DataError past ``max_fraction`` of the epoch.

    The limit is counted against the epoch's sample count (known up front), so it can fire as
    soon as it is exceeded rather than only at the epoch's end, and never early.
    """

    def __init__(self, max_fraction: float, what: str = "samples") -> None:
        self.max_fraction = max_fraction
        self.what = what
        self.items: list[tuple[str, str]] = []
        self.epoch_samples = 0

    def start_epoch(self, epoch_samples: int) -> None:
        self.items = []
        self.epoch_samples = epoch_samples

    def add(self, path: str, reason: str, action: str) -> None:
        # A training re-draw can land on a known-bad sample again: count and warn once.
        if any(p == path for p, _ in self.items):
            return
        self.items.append((path, reason))
        log.warning("bad sample %s: %s (%s)", path, reason, action)

    def check(self) -> None:
        limit = self.max_fraction * max(self.epoch_samples, 1)
        if len(self.items) > limit:
            first = "; ".join(f"{p}: {r}" for p, r in self.items[:3])
            raise DataError(
                f"{len(self.items)} of {self.epoch_samples} {self.what} this epoch could not be "
                f"read, more than data.max_bad_fraction={self.max_fraction:g}; first: {first}. "
                f"Fix or remove them from the list (or raise data.max_bad_fraction)")
