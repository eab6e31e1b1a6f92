"""What a run writes: results.csv (one row per epoch), TensorBoard events, loss and AP curves."""
from __future__ import annotations

import csv
from pathlib import Path

EPOCH_COLUMNS = ["epoch", "loss", "loss_vfl", "loss_bbox", "loss_giou", "lr", "ap", "ap50", "ap75",
                 "ap_small", "ap_medium", "ap_large", "weights", "time_s"]


class RunLogger:
    """Only the main process creates one."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, extra_columns: list[str] | None = None):
        self.run_dir = run_dir
        self.columns = EPOCH_COLUMNS + list(extra_columns or [])
        self.csv_path = run_dir / "results.csv"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is an optional extra
                self.writer = None

    def step(self, global_step: int, scalars: dict[str, float]) -> None:
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, global_step)

    def epoch(self, row: dict) -> None:
        """Append a row to results.csv (header written once) and redraw the curves."""
        new = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        if self.writer is not None:
            for k, v in row.items():
                if isinstance(v, float) and k != "time_s":
                    self.writer.add_scalar(f"epoch/{k}", v, row["epoch"])
            self.writer.flush()
        self.plot()

    def rows(self) -> list[dict]:
        if not self.csv_path.exists():
            return []
        with open(self.csv_path, newline="") as f:
            return list(csv.DictReader(f))

    def plot(self) -> None:
        """loss.png and ap.png from results.csv (skipped when matplotlib is missing)."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        rows = self.rows()
        epochs = [int(r["epoch"]) for r in rows]
        for name, keys in (("loss", ["loss", "loss_vfl", "loss_bbox", "loss_giou"]), ("ap", ["ap", "ap50", "ap75"])):
            fig, ax = plt.subplots(figsize=(6, 4))
            for k in keys:
                pts = [(e, float(r[k])) for e, r in zip(epochs, rows) if r.get(k) not in (None, "")]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=k)
            ax.set_xlabel("epoch")
            ax.set_title(name)
            ax.grid(alpha=0.3)
            # An epoch that was not validated has no AP to draw: a legend then has nothing to
            # name, and matplotlib would warn about it at the end of every short run.
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
            fig.tight_layout()
            fig.savefig(self.run_dir / f"{name}.png", dpi=100)
            plt.close(fig)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
