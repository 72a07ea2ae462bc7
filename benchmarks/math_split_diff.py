"""Our MATH step splitting against the reference's own function, on the same solutions.

    python benchmarks/math_split_diff.py --reference-repo /path/to/Self-Explore
    python benchmarks/math_split_diff.py --reference-splits ref_splits.jsonl

The reference is the authors' ``gen/utils_others.py`` (``get_final_steps``, task "MATH") from a
checkout of github.com/hbin0701/Self-Explore (commit 54b8ba9). It is imported from that checkout
at run time and never copied here; its unused imports (``jsonlines``, ``math_utils``) are stubbed.
``--save`` writes its splits as JSON lines ``{"text", "steps"}`` so later runs need only
``--reference-splits``. Prints how many solutions split identically, the step-count
histogram, and the first differences.

Measured (MATH-500 solutions, ``../shared/data/math500/test.jsonl``): 500/500 identical
(143/500 before the reference's rules were adopted).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from collections import Counter
from pathlib import Path

from sx_dagster.core.steps import split_steps

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "math500" / "test.jsonl"


def reference_splits(repo: Path, texts: list[str]) -> list[list[str]]:
    """Run the reference's ``get_final_steps(li, "MATH")`` on each text; its ``merged_steps``."""
    for name in ("jsonlines", "math_utils", "math_utils.eval_script", "math_utils.answer_extraction"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["math_utils.eval_script"].eval_math = sys.modules["math_utils.eval_script"].is_correct = None  # type: ignore[attr-defined]
    sys.modules["math_utils.answer_extraction"].extract_answer = None  # type: ignore[attr-defined]
    spec = importlib.util.spec_from_file_location("reference_utils_others", repo / "gen" / "utils_others.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.tqdm = lambda x: x  # type: ignore[attr-defined]
    items = [{"prompt": "", "rejected": t} for t in texts]
    module.get_final_steps(items, "MATH")
    return [item["merged_steps"] for item in items]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--reference-repo", type=Path, help="a checkout of hbin0701/Self-Explore")
    src.add_argument("--reference-splits", type=Path, help="JSON lines {text, steps} saved by --save")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JSON lines with the solution in 'answer'")
    p.add_argument("--save", type=Path, help="write the reference's splits here")
    p.add_argument("--show", type=int, default=3, help="differences printed")
    args = p.parse_args()

    if args.reference_splits:
        rows = [json.loads(line) for line in args.reference_splits.read_text().splitlines() if line.strip()]
        texts, ref = [r["text"] for r in rows], [r["steps"] for r in rows]
    else:
        texts = [json.loads(line)["answer"] for line in args.data.read_text().splitlines() if line.strip()]
        ref = reference_splits(args.reference_repo, texts)
    if args.save:
        args.save.write_text("".join(json.dumps({"text": t, "steps": s}) + "\n" for t, s in zip(texts, ref, strict=True)))

    ours = [split_steps(t, "math") for t in texts]
    diff = [i for i, (a, b) in enumerate(zip(ours, ref, strict=True)) if a != b]
    print(f"identical splits: {len(texts) - len(diff)}/{len(texts)}")
    print("steps per solution (reference):", dict(sorted(Counter(map(len, ref)).items())))
    print("steps per solution (ours):     ", dict(sorted(Counter(map(len, ours)).items())))
    for i in diff[: args.show]:
        print(f"--- {i}\nreference: {ref[i]!r}\nours:      {ours[i]!r}")


if __name__ == "__main__":
    main()
