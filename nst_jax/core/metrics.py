"""Evaluation measures shared by the methods: photorealism (matting ratio) and mask overlap.

Synopsis::

  from nst_jax.core import metrics
  metrics.matting_ratio(content, stylized)     # 1.0: as locally affine as the content itself
  metrics.matched_region_iou(pc, ps, tc, ts)   # automatic masks against hand-made ones, in [0, 1]
  metrics.gradient_correlation(stylized, content)  # 1.0: the same edges, at any contrast
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from nst_jax.config import EVAL_EPS
from nst_jax.core import matting, regions


def matting_ratio(content: np.ndarray, image: np.ndarray, *, eps: float = EVAL_EPS) -> float:
  """Matting energy of ``image`` under the content's Laplacian, relative to the content's own.

  Args:
    content: [H, W, 3] in [0, 1].
    image: [H, W, 3], same size.
    eps: the Laplacian's regulariser. At Luan's 1e-7 the content's own energy is only ~3 eps per
      window (it is exactly affine in itself), so 8-bit rounding alone multiplies it by ~60;
      ``EVAL_EPS`` measures local affinity with a tolerance of ~1% of the colour range.

  Returns:
    ``sum_c I_c^T L I_c / sum_c C_c^T L C_c`` (1: as locally affine in the content's colours as
    the content itself).
  """
  coeffs = matting.matting_coefficients(jnp.asarray(content, jnp.float32), eps=eps)
  energy = lambda v: float(matting.energy_with_coefficients(coeffs, jnp.asarray(v, jnp.float32)))
  return energy(image) / max(energy(content), 1e-12)


def gradient_correlation(a: np.ndarray, b: np.ndarray) -> float:
  """Pearson correlation of the Sobel gradient magnitudes of two images' luminance.

  A structure measure for photorealistic transfer: the output should keep the content's edges
  whatever colours it takes (Luan et al. 2017 judge this by eye).

  Args:
    a, b: [H, W, 3] images of the same size.

  Returns:
    The correlation in [-1, 1]; 1 when one gradient-magnitude map is a positive multiple of the
    other plus a constant (e.g. ``b = 0.5 * a``).
  """
  from scipy import ndimage  # pylint: disable=import-outside-toplevel

  def magnitude(img):
    y = np.asarray(img, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # [H, W]
    return np.hypot(ndimage.sobel(y, 0), ndimage.sobel(y, 1)).ravel()

  return float(np.corrcoef(magnitude(a), magnitude(b))[0, 1])


def _iou_matrix(pred: np.ndarray, truth: np.ndarray, n_pred: int, n_truth: int) -> np.ndarray:
  joint = np.bincount(pred.ravel() * n_truth + truth.ravel(),
                      minlength=n_pred * n_truth).reshape(n_pred, n_truth)
  union = joint.sum(1, keepdims=True) + joint.sum(0, keepdims=True) - joint
  return joint / np.maximum(union, 1)


def matched_region_iou(pred_content, pred_style, truth_content, truth_style, *,
                       min_area: float = 1e-3) -> float:
  """Pairing-aware overlap of predicted regions with ground-truth regions, in [0, 1].

  Masks are made hard by argmax. G is the set of ground-truth regions present in both images
  (``pair_regions``). One injective matching pi from G to predicted regions, shared by content
  and style, maximises ``sum_g (IoU_c(pi(g), g) + IoU_s(pi(g), g)) / 2`` (Hungarian); the score
  is that sum divided by |G|. A ground-truth region left unmatched (fewer predicted regions)
  scores 0; extra predicted regions lower the IoU of the regions they take pixels from.

  Args:
    pred_content, pred_style: [R, H, W] / [R, H', W'] predicted soft masks, same region order.
    truth_content, truth_style: [G, H, W] / [G, H', W'] ground truth at the same sizes.
    min_area: presence threshold of ``pair_regions``.

  Returns:
    The score (1.0: both images segmented exactly, with corresponding labels).
  """
  from scipy.optimize import linear_sum_assignment  # pylint: disable=import-outside-toplevel
  shared = np.flatnonzero(regions.pair_regions(truth_content, truth_style, min_area=min_area))
  if shared.size == 0:
    raise ValueError("the ground-truth masks share no region")
  n_pred, n_truth = pred_content.shape[0], truth_content.shape[0]
  iou = sum(_iou_matrix(np.argmax(p, 0), np.argmax(t, 0), n_pred, n_truth)[:, shared]
            for p, t in ((pred_content, truth_content), (pred_style, truth_style))) / 2
  rows, cols = linear_sum_assignment(-iou)
  return float(iou[rows, cols].sum() / shared.size)
