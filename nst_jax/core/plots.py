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


def _positive_range(v: np.ndarray) -> np.ndarray:
  # Exact zeros and negatives have no place on a log axis; they become gaps.
  return np.where(v > 0, v, np.nan)


def make_loss_figure(history: Mapping[str, Sequence[float]], *, title: str = "loss",
                     xlabel: str = "iteration", boundaries: Sequence[int] = ()):
  """A matplotlib figure with one log-scaled axes per loss term, stacked, sharing the x axis.

  Each term gets its own y range (a term that starts at ~0, like the content loss when starting
  from the content image, no longer squashes the others); terms that are zero at every iteration
  get an empty axes saying so. ``boundaries`` (iterations where a stage or level starts) are
  dotted vertical lines on every axes.

  Returns:
    The figure; ``fig.axes`` holds one axes per term, in ``history``'s order.
  """
  plt = _pyplot()
  names = list(history)
  fig, axes = plt.subplots(max(1, len(names)), 1, figsize=(7, 1.2 + 1.9 * max(1, len(names))),
                           dpi=100, sharex=True, squeeze=False)
  for ax, name in zip(axes[:, 0], names):
    v = np.asarray(history[name], np.float64)
    v = v.reshape(len(v), -1).sum(axis=1)  # summed over problems
    if np.any(v > 0):
      ax.plot(np.arange(len(v)), _positive_range(v), lw=1.5)
      ax.set_yscale("log")
    else:
      ax.text(0.5, 0.5, "zero at every iteration", transform=ax.transAxes, ha="center",
              va="center", color="grey")
      ax.set_yticks([])
    for b in boundaries:
      ax.axvline(b, color="grey", ls=":", lw=1)
    ax.set_title(name, fontsize=10, loc="left")
    ax.grid(True, which="both", alpha=0.3)
  axes[-1, 0].set_xlabel(xlabel)
  fig.suptitle(title)
  fig.tight_layout()
  return fig


def save_loss_plot(path: str | os.PathLike, history: Mapping[str, Sequence[float]], *,
                   title: str = "loss", xlabel: str = "iteration",
                   boundaries: Sequence[int] = ()) -> Path:
  """Plots each loss term against the iteration on its own log axis; writes a PNG atomically.

  Args:
    path: output PNG.
    history: name -> values per iteration (or [iterations, problems], summed).
    title: figure title.
    xlabel: x-axis label.
    boundaries: iterations where a new stage starts (drawn as dotted lines).
  """
  plt = _pyplot()
  fig = make_loss_figure(history, title=title, xlabel=xlabel, boundaries=boundaries)
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
  """A grid of images [H, W, 3] in [0, 1] with optional row/column titles, as a PNG (or a JPEG
  of quality 85 when ``path`` ends in .jpg / .jpeg: photos in a tenth of the bytes)."""
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
  jpeg = Path(path).suffix.lower() in (".jpg", ".jpeg")
  out = image_io.atomic_write(path, lambda tmp: fig.savefig(
      tmp, format="jpeg" if jpeg else "png", **({"pil_kwargs": {"quality": 85}} if jpeg else {})))
  plt.close(fig)
  return out
