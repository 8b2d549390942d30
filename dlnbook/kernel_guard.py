"""Imported first in every chapter's kernel: once the process that started the kernel is
gone, kill the kernel's process group (the kernel leads a group of its own, and ipykernel
would leave its children, e.g. chapter 7's workers, running).
"""

import os
import signal
import threading
import time


def _watch(parent: int, interval: float = 0.25) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    if os.getpgid(0) == os.getpid():  # we lead our group: it holds only what we started
        os.killpg(0, signal.SIGKILL)
    os._exit(1)


threading.Thread(target=_watch, args=(os.getppid(),), name="dlnbook-guard", daemon=True).start()
