"""`python -m bench [--quick]`: run every benchmark in bench/ in turn, each in its own process.

A benchmark is a module of this package whose name does not start with `_`; it is run as
`python -m bench.<name>` with `--quick` passed through (a tiny smoke size). Exits non-zero
if any benchmark did.
"""

from __future__ import annotations

import argparse
import pkgutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run on their own: `make soak` (bench/soak.py, 30 simulated days) takes about three minutes.
SEPARATE = ("soak",)


def benchmarks() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(HERE)])
        if not m.name.startswith("_") and m.name not in SEPARATE
    )


def print_speed(when: str) -> None:
    """The day's machine speed, before and after (it can change during a run)."""
    from bench._harness import python_speed_s, wakeup_round_trip_us

    print(
        f"machine speed {when}: a pure-Python loop of 10 million additions "
        f"{python_speed_s():.2f} s (best of 3); "
        f"a process round trip over a socketpair {wakeup_round_trip_us():.1f} µs\n",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke run of every benchmark"
    )
    args = parser.parse_args(argv)
    failed = []
    print_speed("before")
    for name in benchmarks():
        command = [sys.executable, "-m", f"bench.{name}"] + (["--quick"] if args.quick else [])
        print(f"== bench.{name} ==", flush=True)
        started = time.monotonic()
        code = subprocess.call(command, cwd=HERE.parent)
        print(
            f"== bench.{name}: exit {code} in {time.monotonic() - started:.1f} s ==\n", flush=True
        )
        if code:
            failed.append(name)
    print_speed("after")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
