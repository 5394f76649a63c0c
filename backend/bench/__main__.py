"""``python -m bench [default|scale|memory|all ...]``: run benchmarks, one printed line per figure.

- ``default`` (what ``make bench`` runs): the hot paths against the ceiling (bench/hot.py), then the credits
  and rate-limit benchmarks other modules keep here (bench_spend.py, bench_ratelimit.py) when present, and
  the known/unknown address timings of login and password reset (bench_timing.py), and organization API keys
  against own access tokens (bench_api_keys.py).
- ``scale``: seeds a million users and millions of rows, then compares latencies with a nearly empty database
  and prints EXPLAIN for every list query (minutes; opt-in: ``make bench BENCH=scale``).
- ``memory``: resident memory of one worker over 150,000 requests (opt-in).
- ``export``: the worker's peak memory while it streams the account export of a user with 100,000 ledger rows
  (opt-in: ``make bench BENCH=export``).
- ``cleanup``: the retention cleanup on a few million rows: EXPLAIN of every batch, batch times, and the latency
  of requests served meanwhile (opt-in: ``make bench BENCH=cleanup``).
Exit status 1 when a goal is missed or a benchmark fails.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Callable

SUITES = {
    "default": [
        "bench.hot",
        "bench.bench_spend",
        "bench.bench_ratelimit",
        "bench.bench_timing",
        "bench.bench_api_keys",
    ],
    "scale": ["bench.scale"],
    "memory": ["bench.memory"],
    "export": ["bench.export"],
    "cleanup": ["bench.cleanup"],
}


def _run(module_name: str) -> int:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            print(f"# {module_name}: not present, skipped", flush=True)
            return 0
        raise
    entry: Callable[[], int | None] = module.main
    print(f"## {module_name}", flush=True)
    try:
        return int(entry() or 0)
    except Exception:
        traceback.print_exc()
        print(f"# {module_name}: FAILED", flush=True)
        return 1


def main(argv: list[str]) -> int:
    names = argv or ["default"]
    if names == ["all"]:
        names = list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"usage: python -m bench [{'|'.join(SUITES)}|all]  (unknown: {', '.join(unknown)})", file=sys.stderr)
        return 2
    status = 0
    for name in names:
        for module_name in SUITES[name]:
            status |= _run(module_name)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
