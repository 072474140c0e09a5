"""Times the matting Laplacian: sparse host build vs the matrix-free JAX apply.

Synopsis::

  python benchmarks/matting_bench.py --sizes 512 700  # JSON to --out (under benchmarks/results/)

For each long-side size the photo (default ``photo/input/in1.png`` under the data folder, from
``--data-dir`` or $NST_JAX_DATA) is resized, then we time (median of ``--repeats`` runs after a
warm-up, ``block_until_ready`` on every JAX result):

- ``sparse_build``: ``build_matting_laplacian`` (float64 numpy + scipy CSR);
- ``sparse_matvec``: scipy ``L @ v`` for a 3-channel v (Luan's per-iteration cost);
- ``coefficients``: jitted ``matting_coefficients`` (once per content image);
- ``apply``: jitted ``apply_with_coefficients`` (``L @ v``, once per optimizer step);
- ``energy_grad``: jitted value and gradient of ``energy_with_coefficients``;
- ``affine_smooth`` / ``guided_smooth``: the two post-steps of slow photoreal (the default smooth
  local affine solve, weight 1.2, and one guided-filter pass) on the photo plus Gaussian noise
  (sigma 0.05), host arrays in and out.

It also reports the relative error of the float32 apply against the float64 sparse product.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import bench_common as bc
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.core import image_io, matting, smoothing

DEFAULT_IMAGE = Path("photo") / "input" / "in1.png"


def bench_size(photo: Path, size: int, repeats: int) -> dict:
  image = image_io.load_image(photo, size=size)                    # [H, W, 3]
  v = np.random.default_rng(0).random(image.shape, dtype=np.float32)
  x, v_dev = jnp.asarray(image), jnp.asarray(v)
  coefficients = jax.jit(matting.matting_coefficients)
  apply = jax.jit(matting.apply_with_coefficients)
  energy_grad = jax.jit(jax.value_and_grad(matting.energy_with_coefficients, argnums=1))
  coeffs = coefficients(x)
  lap = matting.build_matting_laplacian(image)
  flat = v.reshape(-1, 3).astype(np.float64)
  ref = (lap @ flat).reshape(v.shape)
  error = np.linalg.norm(np.asarray(apply(coeffs, v_dev)) - ref) / np.linalg.norm(ref)
  sparse_repeats = max(1, repeats // 2)
  noise = np.random.default_rng(1).normal(0, 0.05, image.shape)
  noisy = np.clip(image + noise, 0, 1).astype(np.float32)
  return {
      "size": size, "height": image.shape[0], "width": image.shape[1], "nnz": int(lap.nnz),
      "sparse_build_s": bc.time_median(lambda: matting.build_matting_laplacian(image),
                                       sparse_repeats),
      "sparse_matvec_s": bc.time_median(lambda: lap @ flat, repeats),
      "coefficients_s": bc.time_median(lambda: coefficients(x), repeats),
      "apply_s": bc.time_median(lambda: apply(coeffs, v_dev), repeats),
      "energy_grad_s": bc.time_median(lambda: energy_grad(coeffs, v_dev), repeats),
      "apply_rel_error_f32": float(error),
      "affine_smooth_s": bc.time_median(lambda: smoothing.affine_smooth(noisy, image)[0],
                                        repeats),
      "guided_smooth_s": bc.time_median(lambda: smoothing.guided_smooth(noisy, image), repeats),
  }


def format_table(rows: list[dict]) -> str:
  cols = ["size", "height", "width", "sparse_build_s", "sparse_matvec_s", "coefficients_s",
          "apply_s", "energy_grad_s", "apply_rel_error_f32", "affine_smooth_s",
          "guided_smooth_s"]
  lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
  for row in rows:
    lines.append(" | ".join(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c])
                            for c in cols))
  return "\n".join(lines)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  bc.add_common_args(parser, vgg_weights=False, out=bc.RESULTS / "matting_bench.json")
  parser.add_argument("--image", help=f"photo to use (default: DATA/{DEFAULT_IMAGE})")
  parser.add_argument("--sizes", type=int, nargs="+", default=[512, 700])
  parser.add_argument("--repeats", type=int, default=7)
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  photo = Path(args.image) if args.image else bc.data_dir(args) / DEFAULT_IMAGE
  rows = [bench_size(photo, size, args.repeats) for size in args.sizes]
  print(format_table(rows))
  bc.write_result(args.out, {"image": str(photo), "repeats": args.repeats, "results": rows}, args)
  return 0


if __name__ == "__main__":
  bc.run_main(main)
