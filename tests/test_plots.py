"""Loss plots: one log axis per term, level boundaries, zeros that do not break the figure."""

import numpy as np
from PIL import Image

from nst_jax.core import plots


def _history():
  it = np.arange(30, dtype=np.float64)
  return {"content": np.concatenate([[0.0], 1e-6 * (1 + it[1:])]),  # starts at exactly 0
          "style": 1e5 * np.exp(-it / 5) + 10.0,
          "tv": np.zeros(30),  # zero throughout (tv_weight 0)
          "total": 1e5 * np.exp(-it / 5) + 10.0 + 1e-6 * it}


def test_one_log_axes_per_term_each_over_its_own_range():
  fig = plots.make_loss_figure(_history(), boundaries=[10, 20], title="t")
  try:
    axes = fig.axes
    assert [ax.get_title(loc="left") for ax in axes] == ["content", "style", "tv", "total"]
    assert axes[-1].get_xlabel() == "iteration"
    content, style = axes[0], axes[1]
    assert content.get_yscale() == "log" and style.get_yscale() == "log"
    lo, hi = content.get_ylim()
    assert 1e-7 < lo and hi < 1e-4  # the content's own range, not squashed by the style's 1e5
    lo, hi = style.get_ylim()
    assert 1.0 < lo and hi < 1e6
    for ax in axes:  # the two level boundaries on every axes
      xs = sorted(l.get_xdata()[0] for l in ax.get_lines() if l.get_linestyle() == ":")
      assert xs == [10, 20]
    assert axes[2].texts and len(axes[2].get_lines()) == 2  # all-zero term: said, not plotted
  finally:
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_save_loss_plot_writes_a_png_with_zeros_and_batched_terms(tmp_path):
  history = dict(_history(), style=np.stack([_history()["style"]] * 2, axis=1))  # [iters, B]
  out = plots.save_loss_plot(tmp_path / "l.png", history, boundaries=[15])
  img = Image.open(out)
  assert img.format == "PNG" and img.size[1] > img.size[0] / 2  # stacked panels, tall figure


def test_empty_and_single_iteration_histories_do_not_fail(tmp_path):
  assert Image.open(plots.save_loss_plot(tmp_path / "a.png", {"total": [3.0]})).format == "PNG"
  assert Image.open(plots.save_loss_plot(tmp_path / "b.png", {"total": [0.0, 0.0]})).format == "PNG"


def test_image_grid_is_written_in_the_format_its_name_says(tmp_path):
  rng = np.random.default_rng(0)
  rows = [[rng.uniform(size=(16, 16, 3)), None], [rng.uniform(size=(16, 24, 3))]]
  for name, fmt in (("grid.png", "PNG"), ("grid.jpg", "JPEG")):
    path = plots.save_image_grid(tmp_path / name, rows, row_titles=["a", "b"])
    with Image.open(path) as im:
      assert im.format == fmt and im.size == (2 * 220, 2 * 220)
