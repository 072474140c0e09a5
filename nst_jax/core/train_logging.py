"""Training-loop logging: loss history (CSV + PNG), TensorBoard events, throughput.

Synopsis::

  from nst_jax.core import train_logging
  log = train_logging.TrainLog(workdir, start_step=0)          # reloads losses.csv on resume
  log.record(step, metrics)                                    # device scalars; no host sync
  rows = log.flush()                                           # one device_get for the pending
  log.scalars(step, {"images_per_s": 12.5, "data_s": 0.01})    # TensorBoard
  log.images(step, "samples", images)                          # [N, H, W, 3] in [0, 1]
  log.finish()                                                 # losses.csv + losses.png

TensorBoard files are written with ``tensorboardX`` (no TensorFlow needed); without it the run
goes on, and only the CSV and the PNG are written. ``Throughput`` takes the time as an argument so
tests can drive it with a fake clock.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Mapping

import jax
import numpy as np

from nst_jax.core import plots

HISTORY_FILE = "losses.csv"
PLOT_FILE = "losses.png"
TB_SUBDIR = "tb"


def open_summary_writer(logdir: Path, purge_step: int | None):
  """A ``tensorboardX.SummaryWriter``, or None (with a warning) when tensorboardX is missing."""
  try:
    import tensorboardX  # pylint: disable=import-outside-toplevel
  except ImportError:
    warnings.warn("tensorboardX is not installed (pip install tensorboardX): no TensorBoard "
                  "events, only losses.csv and losses.png", stacklevel=2)
    return None
  return tensorboardX.SummaryWriter(str(logdir), purge_step=purge_step or None, flush_secs=30)


def read_history(path: Path, upto: int) -> dict[str, list[float]]:
  """The loss columns of a ``losses.csv`` for steps < ``upto`` (rows after a resume point go)."""
  history: dict[str, list[float]] = {}
  if not path.is_file():
    return history
  with open(path, newline="") as f:
    for row in csv.DictReader(f):
      if int(row.pop("iteration")) >= upto:
        break
      for k, v in row.items():
        history.setdefault(k, []).append(float(v))
  lengths = {len(v) for v in history.values()}
  return history if lengths == {upto} else {}  # a gap (lost rows): start the curve afresh


class Throughput:
  """Images/s and mean data-wait time since the last ``rate`` call."""

  def __init__(self, now: float):
    self._t0, self._images, self._wait, self._steps = now, 0, 0.0, 0

  def add(self, images: int, data_wait: float) -> None:
    self._images += images
    self._wait += data_wait
    self._steps += 1

  def rate(self, now: float) -> dict[str, float]:
    """``{"images_per_s", "data_s_per_step"}`` over the interval; starts the next interval."""
    elapsed = max(now - self._t0, 1e-9)
    out = {"images_per_s": self._images / elapsed,
           "data_s_per_step": self._wait / max(self._steps, 1)}
    self._t0, self._images, self._wait, self._steps = now, 0, 0.0, 0
    return out


class TrainLog:
  """Per-step loss history, kept across resumes, and TensorBoard scalars and images.

  Args:
    workdir: the run's folder (``losses.csv``, ``losses.png`` and ``tb/`` go there).
    start_step: the step the run starts (or resumes) at.
    enabled: False on non-zero processes of a multi-host run (nothing is written).
  """

  def __init__(self, workdir: str | os.PathLike, *, start_step: int = 0, enabled: bool = True):
    self.workdir = Path(workdir)
    self.enabled = enabled
    self.history = read_history(self.workdir / HISTORY_FILE, start_step) if start_step else {}
    self._first = start_step - len(next(iter(self.history.values()), []))
    self._pending: list[tuple[int, Mapping[str, jax.Array]]] = []
    self.writer = open_summary_writer(self.workdir / TB_SUBDIR, start_step) if enabled else None

  def record(self, step: int, metrics: Mapping[str, jax.Array]) -> None:
    """Queues the loss terms (device scalars) computed at ``step``; fetched at ``flush``."""
    self._pending.append((step, metrics))

  def flush(self) -> dict[str, float]:
    """Fetches the queued metrics (one transfer), appends them to the history, logs them to
    TensorBoard; returns the last step's values (empty if nothing was queued)."""
    if not self._pending:
      return {}
    steps = [s for s, _ in self._pending]
    values = jax.device_get([m for _, m in self._pending])
    self._pending = []
    for step, row in zip(steps, values):
      for k, v in row.items():
        self.history.setdefault(k, []).append(float(v))
        if self.writer is not None:
          self.writer.add_scalar(f"loss/{k}", float(v), step)
    return {k: float(v) for k, v in values[-1].items()}

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    if self.writer is not None:
      for k, v in values.items():
        self.writer.add_scalar(k, float(v), step)

  def images(self, step: int, tag: str, images: np.ndarray) -> None:
    """Logs [N, H, W, 3] images in [0, 1] to TensorBoard."""
    if self.writer is not None:
      self.writer.add_images(tag, np.clip(np.asarray(images, np.float32), 0, 1), step,
                             dataformats="NHWC")

  def save_history(self) -> None:
    """Writes ``losses.csv`` (row ``i``: the losses at step ``i``, before its update)."""
    self.flush()
    if self.enabled and self.history and self._first == 0:
      plots.save_history(self.workdir / HISTORY_FILE, self.history)

  def finish(self) -> None:
    """Writes ``losses.csv`` and ``losses.png`` and closes the TensorBoard writer."""
    self.save_history()
    if self.enabled and self.history:
      plots.save_loss_plot(self.workdir / PLOT_FILE, self.history, title="training loss",
                           xlabel="step")
    self.close()

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
      self.writer = None
