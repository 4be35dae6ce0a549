"""The report: gpu_check.json (everything) and gpu_check.md (what a person reads), with
the run's date, machine, software, commit and bundle.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import subprocess
import time
from typing import Any

import torch

from gpu_check_parts.context import (
    BUNDLE,
    REPORT,
    ROOT,
    Context,
    Section,
)


def report_meta(ctx: Context, started: float) -> dict[str, Any]:
    gpu = torch.cuda.get_device_name() if ctx.device == "cuda" else "none"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "rehearsal on the CPU (tiny sizes)" if ctx.rehearse else "GPU check",
        "gpu": gpu,
        "machine": f"{platform.node()}, {os.cpu_count()} cores",
        "software": f"torch {torch.__version__}, Python {platform.python_version()}",
        "commit": commit(),
        "bundle": bundle_manifest(),
        "elapsed_s": round(time.monotonic() - started, 1),
        "budget_s": ctx.sizes.budget_s,
    }


def commit() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, check=True
        )
        return out.stdout.decode().strip()
    return "unknown (no git here)"


def bundle_manifest() -> str:
    path = BUNDLE / "MANIFEST.json"
    if not path.is_file():
        return "none"
    manifest = json.loads(path.read_text())
    return f"built {manifest.get('built')} at commit {manifest.get('commit')}"


def write_report(ctx: Context, sections: list[Section], started: float) -> None:
    """gpu_check.json (everything) and gpu_check.md (what a person reads), rewritten
    after every section."""
    meta = report_meta(ctx, started)
    payload = {"meta": meta, "sections": {s.name: s.__dict__ for s in sections}}
    (ctx.out / f"{REPORT}.json").write_text(json.dumps(payload, indent=2, default=str))
    lines = ["# nst-fast GPU check", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "| section | status | seconds | result |", "| --- | --- | --- | --- |"]
    for s in sections:
        result = s.summary if s.status == "ok" else f"{s.error or s.summary}"
        result = result.replace("|", "/").replace("\n", " ")
        lines.append(f"| {s.title} | {s.status} | {s.seconds:.0f} of {s.box_s:.0f} | {result} |")
    for s in sections:
        lines += ["", f"## {s.title}", "", f"Status: {s.status} ({s.seconds:.1f} s)."]
        if s.error:
            lines += ["", f"Error: `{s.error}`"]
        if s.lines:
            lines += ["", *s.lines]
    (ctx.out / f"{REPORT}.md").write_text("\n".join(lines).rstrip() + "\n")
