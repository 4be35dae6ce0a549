"""The CUDA tests section: the tests that skip without CUDA, found from their source and
run with pytest.
"""

from __future__ import annotations

import ast
import contextlib
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from gpu_check_parts.context import (
    ROOT,
    CommandFailed,
    Context,
    Section,
)
from gpu_check_parts.running import (
    run_command,
)


def cuda_test_ids(tests: Path) -> list[str]:
    """The tests that need CUDA: test functions under a skipif (or a mark assigned to a
    name, or a module's pytestmark) whose source names cuda, and tests that call
    pytest.skip beside a cuda check. Read from the source, so new ones join by themselves."""
    ids = []
    for path in sorted(tests.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        marks, whole = set(), False
        for node in tree.body:
            if isinstance(node, ast.Assign) and is_cuda_skip(node.value):
                names = {t.id for t in node.targets if isinstance(t, ast.Name)}
                whole |= "pytestmark" in names
                marks |= names
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test"):
                continue
            decorators = [ast.unparse(d) for d in node.decorator_list]
            marked = any(is_cuda_skip(d) or any(m in d for m in marks) for d in decorators)
            body = ast.unparse(node)
            skips = "pytest.skip" in body and "cuda.is_available" in body
            if whole or marked or skips:
                ids.append(f"{path.relative_to(tests.parent)}::{node.name}")
    return ids


def is_cuda_skip(node: ast.AST | str) -> bool:
    text = node if isinstance(node, str) else ast.unparse(node)
    return "skipif" in text and "cuda" in text


def section_cuda_tests(ctx: Context, sec: Section) -> None:
    """The tests that skip without CUDA, e.g. the fast modules against the plain ones on
    CUDA in value and gradient, run with pytest."""
    ids = cuda_test_ids(ROOT / "tests")
    if not ids:
        raise RuntimeError("found no CUDA tests under tests/ (skipif ... cuda)")
    xml = ctx.work / "cuda_tests.xml"
    argv = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"]
    with contextlib.suppress(CommandFailed):  # the counts below say what failed
        run_command(ctx, [*argv, f"--junitxml={xml}", *ids])
    if not xml.is_file():
        raise RuntimeError("pytest wrote no results (see the log)")
    cases = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome = "passed"
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome = {"failure": "failed", "error": "error"}.get(kind, kind)
                message = (found.get("message") or "").splitlines()[:1]
                outcome += f": {message[0][:200]}" if message else ""
                break
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome})
    counts: dict[str, int] = {}
    for case in cases:
        key = case["outcome"].split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    sec.data = {"selected": ids, "cases": cases, "counts": counts}
    sec.summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    sec.lines = [f"- `{c['test']}`: {c['outcome']}" for c in cases]
    if counts.get("failed") or counts.get("error"):
        raise RuntimeError(sec.summary)
    if ctx.device == "cuda" and not counts.get("passed"):
        raise RuntimeError(f"no CUDA test ran on the GPU: {sec.summary}")
