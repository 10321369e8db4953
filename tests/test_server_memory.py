"""The server gives memory back after visitors leave (ui/server.release_memory): what a script run freed stays in
the C allocator's free lists, and the RSS of a server that served a class only ever grew, until trimmed."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

# In a fresh process: 200 MB of 2 kB objects (below glibc's mmap threshold: they live in its heap), one in a
# hundred kept alive so the heap cannot shrink from its top, the rest freed.
PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
from ui.server import release_memory
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
start = rss()
blocks = [bytes(2000) + bytes([i % 256]) for i in range(100_000)]
keep = blocks[::100]
grown = rss()
del blocks
freed = rss()
release_memory()
print(start, grown, freed, rss())
"""


def test_release_memory_returns_freed_pages_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    start, grown, freed, trimmed = map(float, out.stdout.split())
    assert grown - start > 150, "the probe did not grow the heap"
    assert freed - start > 150, "freed memory was already returned: the probe no longer tests the trim"
    assert trimmed - start < 40, f"after release_memory the RSS is still {trimmed - start:.0f} MB above the start"
