"""How long this machine takes to give a process fresh memory, with and without huge pages.

numpy asks the kernel for transparent huge pages (2 MiB) on large arrays unless
``NUMPY_MADVISE_HUGEPAGE=0``. On most machines that makes a large array's first touch faster.
On some virtual machines (this project's firecracker VMs among them) a process's huge pages
are backed by the host only when first touched, which can cost seconds: the streaming
statistics then spend most of a call waiting for their first tile's memory, in both the old and
the new path. This prints, for fresh processes under both settings, the seconds to allocate and
touch 128 MiB ten times in a row (the first is the one that pays).

Usage::

    python benchmarks/_hugepages.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = """
import json, mmap, time
import numpy as np
out = []
for _ in range(10):
    t0 = time.perf_counter()
    a = np.empty(128 << 20, np.uint8)
    a[:: mmap.PAGESIZE] = 0
    out.append(time.perf_counter() - t0)
    del a
print(json.dumps(out))
"""


def main() -> None:
    for setting in ("1", "0"):
        env = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": setting}
        done = subprocess.run(
            [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
        )
        times = json.loads(done.stdout)
        rest = sorted(times[1:])[len(times[1:]) // 2]
        print(
            f"NUMPY_MADVISE_HUGEPAGE={setting}: first 128 MiB {times[0] * 1e3:.0f} ms, "
            f"then {rest * 1e3:.0f} ms (median of the next {len(times) - 1})"
        )


if __name__ == "__main__":
    main()
