"""Dask worker plugin of the local cluster (imported only when a cluster starts)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["IgnoreInterrupts"]


class IgnoreInterrupts(WorkerPlugin):
    """A local worker ignores SIGINT: a Ctrl-C in the terminal reaches the whole process
    group, and only the client should react (it stops the workers itself)."""

    name = "dlnbook-ignore-sigint"
    idempotent = True

    def setup(self, worker: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
