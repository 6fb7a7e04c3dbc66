"""The Facebook simulator in a process of its own, for the benchmarks (see
`bench._harness.start_simulator`): reads its configuration as one JSON line on stdin, prints
its URL, and serves until stdin closes (the benchmark ended, or died).

Facebook answers from its own machines: in the benchmark's process the simulator's threads
would wait for the GIL while the benchmark polls the runs, which only the service phase does.
"""
from __future__ import annotations

import json
import sys


def main() -> int:
    from sandbox.server import SandboxServer
    config = json.loads(sys.stdin.readline())
    # Up to 128 server threads share this GIL; a thread whose latency is up waits for it for up
    # to the switch interval (5 ms by default), which both the service and the baseline would pay.
    sys.setswitchinterval(0.0005)
    server = SandboxServer(**config).start()
    print(server.url, flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
