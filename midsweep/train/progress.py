"""A progress bar with loss, tokens/s and ETA (tqdm), on rank 0 and on a terminal only."""
from __future__ import annotations

import contextlib
import sys
import time

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm


class Progress:
    def __init__(self, total: int, start: int, tokens_per_step: int, enabled: bool):
        self.tps, self.start_step, self.t0 = tokens_per_step, start, time.perf_counter()
        self.steps = 0
        self.bar = None
        self.live = contextlib.ExitStack()
        # Redirected to a file (a SLURM job log), a bar's carriage returns and the log lines share lines; the log's
        # step lines say what the bar would. On a terminal, log lines print above the bar instead of into it.
        if enabled and sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
            self.live.enter_context(logging_redirect_tqdm())

    def tokens_per_s(self) -> float:
        return self.steps * self.tps / max(time.perf_counter() - self.t0, 1e-9)

    def update(self, loss: float, phase: str, steps: int = 1) -> None:
        """``steps`` more steps done, the last one with ``loss``."""
        self.steps += steps
        if self.bar is not None:
            self.bar.set_postfix_str(f"{phase} loss {loss:.3f} {self.tokens_per_s():,.0f} tok/s", refresh=False)
            self.bar.update(steps)

    def close(self) -> None:
        self.live.close()
        if self.bar is not None:
            self.bar.close()
            self.bar = None
