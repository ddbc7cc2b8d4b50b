"""What a newcomer's first command costs: `git clone` of this repository's HEAD into an empty directory, then
`make demo` there (the virtualenv, its install and the demo itself), timed as one wall-clock run, and the demo
page's scorecard verdicts judged by `raretask.report.scorecard`.

    python benchmarks/fresh_clone.py [--work DIR] [--keep] [--out PATH]

Targets: at most 15 minutes on this 2-core machine, and the LM comparison size effect (L1 and L2) reproduced in the
demo's scorecard. Packages come from the machine's pip cache and registries as they would for a user; the clone is
deleted afterwards unless --keep. Run it on a quiet machine: another busy process makes the time meaningless.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from raretask.report import scorecard

from record import ROOT, Run, add_out_argument

LIMIT_S = 15 * 60
CLAIMS = ("L1 (comparison)", "L2 (comparison)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, help="where to clone (default: a new temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the clone and its runs/demo")
    add_out_argument(ap)
    args = ap.parse_args()
    run = Run("fresh_clone", args, torch.device("cpu"))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="raretask-clone-"))
    clone = work / "raretask"
    shutil.rmtree(clone, ignore_errors=True)
    try:
        start = time.perf_counter()
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        demo = subprocess.run(["make", "demo"], cwd=clone, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if demo.returncode != 0:
            return run.abort(f"make demo failed ({demo.returncode}): {demo.stderr.strip().splitlines()[-1:]}")
        verdicts = {v.claim.id: v for v in scorecard.judge(clone / "runs" / "demo")}
        run.figures("demo", wall_s=round(wall, 1), verdicts={c: {"verdict": verdicts[c].verdict,
                                                                 "numbers": verdicts[c].numbers} for c in CLAIMS})
        print(f"git clone + make demo: {wall:.0f} s (target <= {LIMIT_S} s)")
        for c in CLAIMS:
            print(f"  {c}: {verdicts[c].verdict} ({verdicts[c].numbers})")
        run.target("git clone + make demo, seconds", round(wall, 1), LIMIT_S, "<=", "s")
        for c in CLAIMS:
            run.target(f"{c} reproduced in the demo's scorecard (1 = yes)",
                       float(verdicts[c].verdict == scorecard.REPRODUCED), 1.0, ">=")
        return run.finish()
    finally:
        if not args.keep:
            shutil.rmtree(clone, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
