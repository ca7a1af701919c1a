"""Where the trainers' metrics go: ``metrics.csv``, TensorBoard, a progress bar and a curve PNG.

Metric names are stable (``objective/score``, ``objective/kl``, ``val/clipfrac``, ...): scripts and
dashboards can rely on them. Every row carries ``step`` (env steps = tokens so far) and
``iteration``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from tqdm.auto import tqdm

KEY_COLUMNS = ("step", "iteration")


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a ``metrics.csv`` as floats (blank cells: NaN)."""
    with open(path, newline="") as f:
        return [{k: float(v) if v != "" else math.nan for k, v in row.items()} for row in csv.DictReader(f)]


class MetricsLog:
    """Appends one row per iteration; ``resume_step`` drops rows written after the checkpoint."""

    def __init__(self, out: Path, total_steps: int, resume_step: int | None = None, enabled: bool = True,
                 progress: bool = True):
        self.path, self.enabled = out / "metrics.csv", enabled
        self.rows: list[dict[str, float]] = []
        if enabled and resume_step is not None and self.path.exists():
            self.rows = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
        self.columns: list[str] | None = list(self.rows[0]) if self.rows else None
        self.writer = None
        self.bar = tqdm(total=total_steps, initial=resume_step or 0, unit="tok", disable=not (enabled and progress),
                        dynamic_ncols=True)
        if enabled:
            self._rewrite()
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step)

    def _rewrite(self) -> None:
        with open(self.path, "w", newline="") as f:
            if self.columns:
                writer = csv.DictWriter(f, self.columns)
                writer.writeheader()
                writer.writerows(self.rows)

    def log(self, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        if self.columns is None:
            self.columns = [*KEY_COLUMNS, *sorted(k for k in row if k not in KEY_COLUMNS)]
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, self.columns, extrasaction="ignore").writerow(row)
        for key, value in row.items():
            if key not in KEY_COLUMNS:
                self.writer.add_scalar(key, value, int(row["step"]))
        self.writer.flush()
        self.bar.update(int(row["step"]) - self.bar.n)
        self.bar.set_postfix(score=f"{row['objective/score']:.3f}", kl=f"{row['objective/kl']:.3f}",
                             tok_s=f"{row['time/tokens_per_s']:.0f}")

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def plot_learning_curve(rows: list[dict[str, float]], path: Path, title: str) -> None:
    """Score and KL against tokens, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (score, kl) = plt.subplots(1, 2, figsize=(9, 3.2))
    score.plot(steps, [r["objective/score"] for r in rows])
    score.set(xlabel="tokens", ylabel="mean task score (train)", title=title)
    kl.plot(steps, [r["objective/kl"] for r in rows], color="tab:red")
    kl.set(xlabel="tokens", ylabel="KL to base (per episode)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
