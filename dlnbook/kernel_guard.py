"""Imported at the start of every chapter's kernel: the kernel ends with the process that
started it, and takes the processes it started along.

jupyter_client starts each kernel as the leader of a new process group, so a Ctrl-C or a
kill aimed at ``dln-book`` (or ``jupyter-book``) does not reach it; ipykernel exits when its
parent dies but leaves its own children (chapter 7's worker processes) running. A daemon
thread polls the parent and, once it is gone, kills the kernel's whole process group.
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
