"""PNG figures people look at: loss curves and image grids (matplotlib, Agg backend).

Synopsis::

  from nst_jax.core import plots
  plots.save_loss_plot("losses.png", {"total": [...], "style": [...]})
  plots.save_image_grid("grid.png", [[img, img], [img, img]], row_titles=..., col_titles=...)
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from nst_jax.core import image_io


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save_loss_plot(path: str | os.PathLike, history: Mapping[str, Sequence[float]], *,
                   title: str = "loss", xlabel: str = "iteration",
                   boundaries: Sequence[int] = ()) -> Path:
  """Plots each loss term against the iteration on a log scale; writes a PNG atomically.

  Args:
    path: output PNG.
    history: name -> values per iteration.
    title: figure title.
    xlabel: x-axis label.
    boundaries: iterations where a new stage starts (drawn as dotted lines).
  """
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
  for name, values in history.items():
    v = np.asarray(values, np.float64).reshape(len(values), -1).sum(axis=1)
    if np.any(v > 0):
      ax.plot(np.arange(len(v)), np.where(v > 0, v, np.nan), label=name, lw=1.5)
  for b in boundaries:
    ax.axvline(b, color="grey", ls=":", lw=1)
  ax.set_yscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel("weighted loss")
  ax.set_title(title)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend()
  fig.tight_layout()
  out = image_io.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
  plt.close(fig)
  return out


def save_history(path: str | os.PathLike, history: Mapping[str, Sequence[float]]) -> Path:
  """Writes the loss history as CSV (``.csv``) or JSON (anything else), one row per iteration."""
  names = list(history)
  rows = np.stack([np.asarray(history[n], np.float64).reshape(len(history[n]), -1).sum(1)
                   for n in names], axis=1) if names else np.zeros((0, 0))

  def write(tmp):
    if str(path).lower().endswith(".csv"):
      with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["iteration"] + names)
        for i, row in enumerate(rows):
          w.writerow([i] + [f"{v:.8g}" for v in row])
    else:
      with open(tmp, "w") as f:
        json.dump({n: rows[:, j].tolist() for j, n in enumerate(names)}, f)

  return image_io.atomic_write(path, write)


def save_image_grid(path: str | os.PathLike, rows: Sequence[Sequence[np.ndarray]], *,
                    row_titles: Sequence[str] = (), col_titles: Sequence[str] = (),
                    cell: float = 2.2) -> Path:
  """A grid of images [H, W, 3] in [0, 1] with optional row/column titles, as a PNG."""
  plt = _pyplot()
  nr, nc = len(rows), max(len(r) for r in rows)
  fig, axes = plt.subplots(nr, nc, figsize=(cell * nc, cell * nr), dpi=100, squeeze=False)
  for i in range(nr):
    for j in range(nc):
      ax = axes[i][j]
      ax.set_xticks([])
      ax.set_yticks([])
      if j < len(rows[i]) and rows[i][j] is not None:
        ax.imshow(np.clip(np.asarray(rows[i][j]), 0, 1))
      else:
        ax.axis("off")
      if i == 0 and j < len(col_titles):
        ax.set_title(col_titles[j], fontsize=9)
      if j == 0 and i < len(row_titles):
        ax.set_ylabel(row_titles[i], fontsize=9)
  fig.tight_layout()
  out = image_io.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
  plt.close(fig)
  return out
