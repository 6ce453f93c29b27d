"""Run every benchmark under bench/ (each prints its own table of figures and ratios).

Usage: ``python bench/run.py [name ...]`` — names are the sub-directories (bandwidth, convergence, ...).
Benchmarks are not tests: they never fail on timing, they report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    names = argv or sorted(p.name for p in HERE.iterdir() if (p / "run.py").exists())
    failed = []
    for name in names:
        script = HERE / name / "run.py"
        print(f"\n=== bench/{name} ===", flush=True)
        if subprocess.run([sys.executable, str(script)], check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that could not run: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
