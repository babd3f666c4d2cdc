"""Block functions used by the engine tests (importable by worker processes)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from wiremap.blockwise import Block
from wiremap.filters import SmoothBlock


@dataclass(frozen=True)
class SlowSmoothBlock:
    """SmoothBlock that takes a while, so a run can be killed part-way."""

    inner: SmoothBlock
    delay_s: float

    def __call__(self, block: Block) -> None:
        time.sleep(self.delay_s)
        self.inner(block)


@dataclass(frozen=True)
class FlakyBlock:
    """Fails the first ``failures`` attempts of every block (counted in files under ``scratch``)."""

    scratch: str
    failures: int

    def __call__(self, block: Block) -> None:
        counter = Path(self.scratch) / f"{block.block_id}.attempts"
        attempts = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(attempts + 1))
        if attempts < self.failures:
            raise RuntimeError(f"transient failure of block {block.block_id}")
