"""Progress reporting for transfers: a tqdm bar when tqdm is installed, plain lines otherwise."""

from __future__ import annotations

import sys
from typing import Protocol


class Progress(Protocol):
    """What a transfer reports to: bytes as they move, then the end."""

    def update(self, n: int) -> None: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


class _Silent:
    def update(self, n: int) -> None:
        pass

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Lines:
    """A line on stderr at every tenth of the transfer (or every 64 MiB when the size is unknown)."""

    _STEP_UNKNOWN = 64 * 2**20

    def __init__(self, total: int | None, description: str) -> None:
        self.total, self.description, self.done, self.reported = total, description, 0, 0

    def update(self, n: int) -> None:
        self.done += n
        step = self.total / 10 if self.total else self._STEP_UNKNOWN
        if self.done - self.reported >= step:
            self._report()

    def reset(self) -> None:
        self.done = self.reported = 0

    def close(self) -> None:
        if self.done != self.reported or self.done == 0:
            self._report()

    def _report(self) -> None:
        self.reported = self.done
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        print(f"{self.description}: {self.done} bytes{share}", file=sys.stderr, flush=True)


def make_progress(enabled: bool, total: int | None, description: str) -> Progress:
    """A reporter for one transfer of `total` bytes (None: unknown); silent unless `enabled`."""
    if not enabled:
        return _Silent()
    try:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]
    except ImportError:
        return _Lines(total, description)
    bar: Progress = tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)
    return bar
