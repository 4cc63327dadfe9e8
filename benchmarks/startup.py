"""Start-up time of the help screens against the floor ``python -c "import typer, rich"``
(issue 13; target: within 2x). Not a test.

Each command runs in a fresh interpreter, interleaved (every command once per round,
``--reps`` rounds), and the medians are printed with their ratio to the floor. The help runs
through the real entry point (:func:`lcnn_audit.cli.main`, as the console script calls it)
and also reports whether torch was imported.

    python benchmarks/startup.py [--reps 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_HELP = ("import sys; sys.argv = ['lcnn-audit', *{argv!r}]\n"
         "from lcnn_audit.cli import main\n"
         "try:\n    main()\nexcept SystemExit:\n    pass\n"
         "sys.stderr.write('torch=%s' % ('torch' in sys.modules))")
#: the least any Typer app with rich help pays to print a help screen (Typer's help renderer
#: imports rich.markdown, pydantic, ... on first use), for a second, fairer ratio
_MINIMAL = ("import sys, typer\n"
            "app = typer.Typer(rich_markup_mode='rich')\n"
            "@app.command()\ndef one(n: int = typer.Option(1, help='A number.')) -> None:\n    pass\n"
            "@app.command()\ndef two() -> None:\n    pass\n"
            "sys.argv = ['app', 'one', '--help']\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n")
FLOOR = 'python -c "import typer, rich"'
MINIMAL = "minimal Typer app: one --help"
CASES = {
    FLOOR: "import typer, rich",
    MINIMAL: _MINIMAL,
    "lcnn-audit --help": _HELP.format(argv=["--help"]),
    "lcnn-audit curvature --help": _HELP.format(argv=["curvature", "--help"]),
}


def _once(code: str) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - t0, proc.stderr.strip().rpartition("torch=")[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in CASES}
    torch_loaded: dict[str, str] = {}
    for _ in range(args.reps):
        for name, code in CASES.items():
            dt, loaded = _once(code)
            times[name].append(dt)
            torch_loaded[name] = loaded or "-"
    floor = statistics.median(times[FLOOR])
    minimal = statistics.median(times[MINIMAL])
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"python {platform.python_version()}; {args.reps} interleaved rounds, medians")
    print(f"{'command':34s} {'median s':>9s} {'min s':>7s} {'x floor':>8s} {'x minimal':>9s} {'torch':>6s}")
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append({"command": name, "median_s": round(med, 4), "min_s": round(min(ts), 4),
                     "ratio": round(med / floor, 2),
                     "ratio_minimal_typer": round(med / minimal, 2), "torch_imported": torch_loaded[name]})
        print(f"{name:34s} {med:9.3f} {min(ts):7.3f} {med / floor:8.2f} {med / minimal:9.2f} {torch_loaded[name]:>6s}")
    worst = max(r["ratio"] for r in rows)
    print(f"worst ratio to {FLOOR}: {worst:.2f} (target <= 2.00): {'met' if worst <= 2.0 else 'NOT met'}")
    print(f"worst ratio to the minimal Typer app: {max(r['ratio_minimal_typer'] for r in rows):.2f}")
    print(json.dumps({"reps": args.reps, "results": rows}))


if __name__ == "__main__":
    main()
