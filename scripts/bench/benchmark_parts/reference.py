"""The reference implementation (pytorch/examples' fast_neural_style), timed by
../shared/bench/peer_bench.py in a subprocess: its figures and its process's peak RSS.
"""

from __future__ import annotations

import re
import subprocess
import sys

from benchmark_parts import paths

# Runs peer_bench.py unchanged in this interpreter, then prints the process's peak RSS.
PEER_WRAPPER = """
import atexit, runpy, sys
sys.argv = sys.argv[1:]
def report():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print(f"peak_rss_kib {line.split()[1]}", flush=True)
atexit.register(report)
runpy.run_path(sys.argv[0], run_name="__main__")
"""


PEER_TRAIN = re.compile(r"peer train (\d+)px: ([\d.]+) img/s")
PEER_STYLIZE = re.compile(r"peer stylize (\d+)px: ([\d.]+) s/img")


def run_peer(device: str, batch: int, size: int, steps: int) -> dict:
    """Run ../shared/bench/peer_bench.py once: its figures, and its process's peak RSS."""
    cmd = [sys.executable, "-c", PEER_WRAPPER, str(paths.PEER_BENCH), "--device", device]
    cmd += ["--steps", str(steps), "--batch", str(batch), "--size", str(size)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{paths.PEER_BENCH} failed:\n{out.stderr[-2000:]}")
    stdout = out.stdout
    result: dict = {"lines": [line for line in stdout.splitlines() if line.startswith("peer")]}
    for m in PEER_TRAIN.finditer(stdout):
        result["img_per_s"] = float(m.group(2))
    result["stylize"] = {int(m.group(1)): float(m.group(2)) for m in PEER_STYLIZE.finditer(stdout)}
    rss = re.search(r"peak_rss_kib (\d+)", stdout)
    if rss:
        result["peak_rss_mib"] = int(rss.group(1)) / 1024
    return result
