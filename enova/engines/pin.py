"""`python -m enova.engines.pin --cpus 0,1 -- ARGV...`: bind to CPU cores, then exec ARGV.

The CPU-affinity trampoline for engine replicas. Setting the affinity before exec means
every thread and child process of the engine inherits it; exec keeps the pid (and its
start time), so the replica record started by enova still names the engine itself.
"""

from __future__ import annotations

import os
import sys


def parse_cpus(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[0] != "--cpus" or argv[2] != "--":
        sys.exit("usage: python -m enova.engines.pin --cpus LIST -- ARGV...")
    os.sched_setaffinity(0, parse_cpus(argv[1]))
    os.execv(argv[3], argv[3:])


if __name__ == "__main__":
    main(sys.argv[1:])
