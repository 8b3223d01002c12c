"""Training metrics: one JSON line per logged step in `out_dir/metrics.jsonl`, optional
TensorBoard, and PNG curves drawn from the JSONL.

`MetricsLogger(out_dir, tensorboard=False, rank0=True)`: `.log(step, **metrics)` appends
`{"step": step, "time": unix seconds, **metrics}` and flushes, so a killed run keeps every line
written; tensors and numpy scalars become plain numbers. Off rank 0 (`rank0=False`) it does
nothing. On resume, lines for steps after the resumed step (written after the last checkpoint of
a killed run) are dropped by `truncate_after(step)`, so the file reads as one uninterrupted run.

With `tensorboard=True` the numeric values of each line (not NaN, not booleans) also go to
TensorBoard event files in `out_dir/tb`, with the line's step and time, flushed with it. After
`truncate_after(step)` the next writer starts with TensorBoard's purge marker (`purge_step`), so
TensorBoard hides the killed run's events past `step` as well.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from pathlib import Path


def _number(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


class MetricsLogger:
    """Appends metrics lines to `out_dir/metrics.jsonl` (rank 0 only); holds the open file."""

    def __init__(self, out_dir, *, tensorboard: bool = False, rank0: bool = True,
                 filename: str = "metrics.jsonl"):
        self.enabled = bool(rank0)
        self.path = Path(out_dir) / filename
        self.tb_dir = Path(out_dir) / "tb" if tensorboard else None
        self._file = None
        self._tb = None
        self._purge_step = None  # truncate_after's step + 1: TensorBoard hides older events from this step on
        if not self.enabled:
            return
        if tensorboard and importlib.util.find_spec("tensorboard") is None:  # fail here, not at the first step
            raise ImportError("MetricsLogger: tensorboard=True needs the `tensorboard` package "
                              "(pip install tensorboard)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")

    def _writer(self):
        """The TensorBoard writer, opened on first use (after truncate_after, with its purge step)."""
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.tb_dir), purge_step=self._purge_step)
        return self._tb

    def truncate_after(self, step: int) -> None:
        """Drop lines of steps > `step` (left by a run killed after its last checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        self._file.close()
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(keep), encoding="utf-8")
        os.replace(tmp, self.path)
        self._file = open(self.path, "a", encoding="utf-8")
        if self.tb_dir is not None:  # the next writer opens with the purge marker
            if self._tb is not None:
                self._tb.close()
                self._tb = None
            self._purge_step = int(step) + 1

    def log(self, step: int, **metrics) -> None:
        """Append one line for `step` (and TensorBoard scalars when enabled)."""
        if not self.enabled:
            return
        row = {"step": int(step), "time": round(time.time(), 3)}
        row.update({key: _number(value) for key, value in metrics.items()})
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self.tb_dir is not None:
            writer = self._writer()
            for key, value in row.items():
                if key not in ("step", "time") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(key, value, row["step"], walltime=row["time"])
            writer.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_metrics(metrics_jsonl) -> list[dict]:
    """The lines of a metrics file as dicts."""
    path = Path(metrics_jsonl)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file {str(path)!r} does not exist")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def running_mean(values: list, window: int) -> list:
    """Mean of each value and up to `window - 1` before it (NaNs left out; NaN if all are)."""
    out = []
    for i in range(len(values)):
        chunk = [v for v in values[max(0, i - window + 1):i + 1] if v == v]
        out.append(sum(chunk) / len(chunk) if chunk else math.nan)
    return out


def plot_curves(metrics_jsonl, out_png, keys, *, title: str | None = None, smooth: int = 0,
                log_scale=()) -> Path:
    """One panel per metric in `keys` (against step) from a metrics JSONL, saved as a PNG.
    smooth > 1 draws the raw values faintly with their `running_mean` over `smooth` logged steps;
    the metrics named in `log_scale` get a log y axis (when all their values are positive)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_jsonl)
    keys = [keys] if isinstance(keys, str) else list(keys)
    present = [k for k in keys if any(isinstance(r.get(k), (int, float)) for r in rows)]
    if not present:
        raise ValueError(f"plot_curves: none of {keys} is in {metrics_jsonl} "
                         f"(keys there: {sorted({k for r in rows for k in r})})")
    fig, axes = plt.subplots(1, len(present), figsize=(4 * len(present), 3), squeeze=False)
    for ax, key in zip(axes[0], present):
        points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        steps, values = [p[0] for p in points], [float(p[1]) for p in points]
        if smooth > 1:
            ax.plot(steps, values, alpha=0.3, color="C0")
            ax.plot(steps, running_mean(values, smooth), color="C0", label=f"mean of {smooth}")
            ax.legend(loc="best", fontsize=8)
        else:
            ax.plot(steps, values, marker="." if len(points) < 50 else None)
        if key in log_scale and min(values) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
