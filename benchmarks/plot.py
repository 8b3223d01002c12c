"""Draw the benchmark CSVs in benchmarks/results/ as PNGs: one figure per (what, metric, mode,
device), one line per provider over the shapes, from the newest run (git sha and date) only.

    python benchmarks/plot.py                     # every CSV in benchmarks/results/
    python benchmarks/plot.py results/grpo_loss.csv --out /tmp/plots
"""
from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def newest_run(rows: list[dict]) -> list[dict]:
    """Rows of the most recent run per device (a run: same git sha and date minute)."""
    by_device = defaultdict(list)
    for row in rows:
        by_device[row["device"]].append(row)
    kept = []
    for device_rows in by_device.values():
        last = max(r["date"][:16] for r in device_rows)
        kept += [r for r in device_rows if r["date"][:16] == last]
    return kept


def plot_csv(path: Path, out_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(path, newline="") as f:
        rows = newest_run(list(csv.DictReader(f)))
    groups = defaultdict(list)
    for row in rows:
        groups[(row["what"], row["metric"], row.get("mode", ""), row["device"])].append(row)
    written = []
    for (what, metric, mode, device), group in sorted(groups.items()):
        shapes = list(dict.fromkeys(r["shape"] for r in group))
        if len(shapes) < 1:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for provider in sorted({r["provider"] for r in group}):
            values = {r["shape"]: float(r["median"]) for r in group if r["provider"] == provider}
            ys = [values.get(s, math.nan) for s in shapes]
            ax.plot(range(len(shapes)), ys, marker="o", label=provider)
        ax.set_xticks(range(len(shapes)), shapes, rotation=20, ha="right", fontsize=7)
        ax.set_ylabel(f"{metric} ({group[0]['unit']})")
        ax.set_title(f"{what} {mode} — {device}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = "_".join(x for x in (path.stem, what, metric, mode.replace("+", ""), device.split(":")[0]) if x)
        target = out_dir / f"{name.replace(' ', '_')}.png"
        fig.savefig(target, dpi=110)
        plt.close(fig)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("csvs", nargs="*", type=Path, help="CSV files (default: every benchmarks/results/*.csv)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the PNGs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.csvs or sorted(RESULTS.glob("*.csv")):
        for target in plot_csv(path, args.out):
            print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
