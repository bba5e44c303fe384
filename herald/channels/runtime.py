"""One asyncio event loop per worker process, in its own thread, for every provider channel.

A deliver task is synchronous Celery code; the sends inside it are concurrent coroutines. The
loop lives as long as the process so that HTTP connections (and their TLS and HTTP/2 state)
persist from one batch to the next; it is created lazily, after Celery's prefork, and forgotten
in a forked child (a thread does not survive ``fork``). Any Celery pool kind works: prefork,
solo and threads all hand their coroutines to the same loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def loop() -> asyncio.AbstractEventLoop:
    """The process's delivery loop, started on first use."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            new = asyncio.new_event_loop()
            thread = threading.Thread(target=new.run_forever, name="herald-deliver-loop", daemon=True)
            thread.start()
            _loop = new
        return _loop


def run(coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
    """Run a coroutine on the delivery loop and wait for its result (from any thread but the loop's)."""
    return asyncio.run_coroutine_threadsafe(coro, loop()).result(timeout_s)


def _forget() -> None:
    # In a forked child the parent's loop thread is gone; its sockets belong to the parent.
    global _loop, _lock
    _loop = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget)
