#!/usr/bin/env python3
"""Size, memory and seconds per image of an ExecuTorch export (.pte, XNNPACK), beside eager
PyTorch fp32 on the same inputs, on this machine's CPU.

    python scripts/bench/bench_executorch.py [--sizes 256 512] [--max-size 512] [--repeats 5]

Exports the default architecture (``transformer_net()``, random weights: speed does not
depend on them) once, taking sides up to --max-size (at least the largest of --sizes),
then times batch-1 passes at each size, interleaving the runners so that a busy machine
slows them alike: ExecuTorch's Python runtime with XNNPACK, the plain eager network, and
nst-fast's prepared fast path (what ``nst-fast stylize`` runs). Prints the median of
--repeats, the file's size, the memory the runtime holds once the program is loaded (RSS
grown by loading ``forward``, which reserves the planned memory for the largest input),
and the largest difference from eager. Needs the executorch package
(pip install 'nst-fast[executorch]').
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nst_fast import __version__  # noqa: E402
from nst_fast.executorch_export import export_executorch  # noqa: E402
from nst_fast.export import ModelInfo  # noqa: E402
from nst_fast.model_loading import load_for_inference  # noqa: E402
from nst_fast.models.transformer import transformer_net  # noqa: E402
from nst_fast.prepared import forward, prepare  # noqa: E402


def rss_mb() -> float:
    """This process's resident memory now, in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--max-size", type=int, help="default: the largest of --sizes")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    max_size = args.max_size or max(args.sizes)

    torch.manual_seed(0)
    net = transformer_net().eval()
    info = ModelInfo(
        style="random", step=0, arch=net.config.to_dict(), nst_fast_version=__version__
    )
    fast = prepare(net, "cpu", torch.float32, fast=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pte"
        start = time.perf_counter()
        export_executorch(net, info, path, max_size=max_size)
        print(f"export (max side {max_size}): {time.perf_counter() - start:.0f} s")
        print(f".pte size: {path.stat().st_size / 1e6:.1f} MB")
        before = rss_mb()
        model = load_for_inference(path, torch.device("cpu"), torch.float32)
        model.run(torch.rand(1, 3, 64, 64))  # loads the method: its planned memory
        print(f"memory held by the loaded program: {rss_mb() - before:.0f} MB")

        runners = {
            "executorch xnnpack": model.run,
            "eager fp32": lambda x: net(x).clamp(0, 1),
            "eager fp32 (nst-fast fast path)": lambda x: forward(fast, x),
        }
        for size in args.sizes:
            x = torch.rand(1, 3, size, size)
            times: dict[str, list[float]] = {name: [] for name in runners}
            with torch.inference_mode():
                expected = net(x).clamp(0, 1)
                for run in runners.values():
                    run(x)  # warm-up
                for _ in range(args.repeats):
                    for name, run in runners.items():
                        start = time.perf_counter()
                        run(x)
                        times[name].append(time.perf_counter() - start)
                diff = (model.run(x) - expected).abs().max().item()
            for name, taken in times.items():
                print(f"{size}px {name}: {statistics.median(taken):.3f} s/img")
            print(f"{size}px max |executorch - eager| = {diff:.1e}")


if __name__ == "__main__":
    main()
