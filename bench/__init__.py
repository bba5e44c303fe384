"""herald's benchmark: ``python -m bench [--quick]``.

Runs herald's real worker pools on Postgres and Redis (127.0.0.1) against the local fakes set to
50 ms of latency, and in the same run two references on the same machine: a naive baseline (one
Celery task per delivery, synchronous send) and the ceiling (a bare async client straight to the
fakes). Figures and ratios are printed and appended to ``bench/RESULTS.md``.
"""
