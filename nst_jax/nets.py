"""Feed-forward image transformation networks for fast style transfer (Flax Linen).

Synopsis::

  import jax
  from nst_jax import nets
  model = nets.ThesisNet()                                    # or JohnsonNet(), TinyNet()
  variables = nets.init_variables(model, jax.random.key(0))
  out = model.apply(variables, images)                        # [B, H, W, 3] in [0, 1]; H, W % 4 == 0
  out = nets.stylize_any_size(model, variables, odd_images)   # pads, applies, crops back
  nets.count_params(variables)                                # 1_679_235 for JohnsonNet

  # batch normalization: statistics live in the "batch_stats" collection
  out, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])

The network maps RGB images in [0, 1] to RGB images in [0, 1]; it is fully convolutional with two
stride-2 downsamplings, so a direct call needs H and W divisible by 4 (``stylize_any_size`` lifts
that). Layer names follow the caffe habit: ``conv1 norm1 conv2 norm2 conv3 norm3 res1..res5
(conv1 norm1 conv2 norm2) deconv1|upconv1 norm4 deconv2|upconv2 norm5 conv_out``.

References:
  Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and Super-Resolution",
  ECCV 2016, and its supplementary material (the architecture).
  Ulyanov, Vedaldi & Lempitsky, "Instance Normalization: The Missing Ingredient for Fast
  Stylization", 2016.
  Odena, Dumoulin & Olah, "Deconvolution and Checkerboard Artifacts", Distill 2016.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.errors import UserError

NORMALIZATIONS = ("instance", "batch")
UPSAMPLES = ("transpose", "resize")
PADDINGS = ("reflect", "zero")
OUTPUTS = ("rgb", "affine")
AFFINE_SCALE = 0.1  # the affine head's raw outputs are scaled by this (starts near the identity)
THESIS_INPUT_BLEND = 0.15  # the reference thesis' training-time blend of the input into the output
MULTIPLE = 4  # two stride-2 stages: H and W must be divisible by 4


_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _pad_hw(x, pad: int, padding: str):
  # [B, H, W, C] -> [B, H + 2 pad, W + 2 pad, C]; "reflect" excludes the edge pixel (Torch).
  if not pad:
    return x
  mode = "reflect" if padding == "reflect" else "constant"
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)


def _pad_end(x, height: int, width: int):
  # Zero-pads [B, h, w, C] at the bottom and right to [B, height, width, C].
  return jnp.pad(x, ((0, 0), (0, height - x.shape[1]), (0, width - x.shape[2]), (0, 0)))


def _conv_valid(x, kernel, stride: int = 1):
  # [B, H, W, I] x [k, k, I, O] -> [B, (H - k) // stride + 1, ..., O], XLA's own convolution.
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "VALID",
                                      dimension_numbers=_DIMENSIONS)


def conv_reference(x, kernel, stride: int = 1, *, padding: str = "reflect"):
  """The plain k x k convolution that ``conv2d`` computes faster: pad by k // 2, then correlate.

  Args:
    x: [B, H, W, I].
    kernel: [k, k, I, O] (HWIO, k odd).
    stride: 1 or 2.
    padding: "reflect" or "zero".

  Returns:
    [B, ceil(H / stride), ceil(W / stride), O].
  """
  return _conv_valid(_pad_hw(x, kernel.shape[0] // 2, padding), kernel, stride)


# Winograd F(m x m, 3x3) (Lavin & Gray 2016): each m x m output tile is A^T [(G g G^T) *
# (B^T d B)] A for the (m + 2)^2 input tile d, i.e. (m + 2)^2 matrix products over channels per
# tile instead of 9 m^2 convolution taps (m = 2: 2.25x fewer multiplies, m = 4: 4x). The products
# are batched matmuls, which XLA:CPU runs much faster than its 3x3 convolutions. m = 2 has
# coefficients 0, +-1, 1/2 (exact up to a few roundings); m = 4 (points 0, +-1, +-2) loses about
# 10x more, still ~1e-6 of the output's scale in float32.
_WINOGRAD = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),  # B^T
        np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]),  # G
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]])),  # A^T
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]])),
}
# m for float32 stride-1 3x3 convolutions. m = 4 runs the residual blocks ~1.6x faster, but its
# output error (~1.5e-5 on ThesisNet's [0, 1] output, 5x that of XLA's convolutions) exceeds the
# 1e-5 to which tests/test_inference.py compares two tilings of the same image.
WINOGRAD_TILE = 2


def _combine(coeffs, xs):
  # sum_i coeffs[i] * xs[i] with the zero terms left out, as elementwise ops XLA fuses.
  terms = [x if c == 1 else -x if c == -1 else x * float(c) for c, x in zip(coeffs, xs) if c]
  return functools.reduce(lambda a, b: a + b, terms)


def _winograd_tiles(xp, m: int, tiles_h: int, tiles_w: int):
  # [B, m (th + 1), m (tw + 1), C] -> [n^2, B th tw, C] (n = m + 2): B^T d B for each overlapping
  # n x n tile d, as two separable passes (rows, then columns) over unstrided slices, which
  # XLA:CPU fuses into two vectorized loops (one pass over n^2 strided slices is 2-3x slower).
  bt, n = _WINOGRAD[m][0], m + 2
  b, _, wp, c = xp.shape
  rows = xp.reshape(b, tiles_h + 1, m, wp, c)
  d = [rows[:, r // m:r // m + tiles_h, r % m] for r in range(n)]  # [B, th, Wp, C] each
  e = jnp.stack([_combine(bt[i], d) for i in range(n)])  # [n, B, th, Wp, C]
  cols = e.reshape(n, b, tiles_h, tiles_w + 1, m, c)
  f = [cols[:, :, :, s // m:s // m + tiles_w, s % m] for s in range(n)]  # [n, B, th, tw, C]
  v = jnp.stack([_combine(bt[j], f) for j in range(n)], 1)  # [n, n, B, th, tw, C]
  return v.reshape(n * n, b * tiles_h * tiles_w, c)


def _winograd_conv3x3(xp, kernel, m: int = WINOGRAD_TILE):
  # VALID 3x3 correlation [B, H + 2, W + 2, I] x [3, 3, I, O] -> [B, H, W, O] (any H, W).
  _, g, at = _WINOGRAD[m]
  b, hp, wp, _ = xp.shape
  h, w, o, n = hp - 2, wp - 2, kernel.shape[-1], m + 2
  th, tw = -(-h // m), -(-w // m)
  v = _winograd_tiles(_pad_end(xp, m * (th + 1), m * (tw + 1)), m, th, tw)  # [n^2, T, I]
  g = jnp.asarray(g, jnp.float32)
  u = jnp.einsum("ir,rsco,js->ijco", g, kernel.astype(jnp.float32), g)  # [n, n, I, O]
  prod = jnp.einsum("ktc,kco->kto", v, u.reshape(n * n, -1, o).astype(xp.dtype))
  prod = prod.reshape(n, n, b, th, tw, o)
  rows = jnp.stack([_combine(at[a], [prod[i] for i in range(n)]) for a in range(m)])
  y = jnp.stack([_combine(at[e], [rows[:, j] for j in range(n)]) for e in range(m)], -2)
  y = jnp.moveaxis(y, 0, 2)  # [m (a), B, th, tw, m (e), O] -> [B, th, m, tw, m, O]
  return y.reshape(b, m * th, m * tw, o)[:, :h, :w]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv3x3(xp, kernel, tile: int = WINOGRAD_TILE):
  """VALID 3x3 correlation [B, H + 2, W + 2, I] x [3, 3, I, O] -> [B, H, W, O].

  Winograd F(tile x tile, 3x3) forward in float32; the gradients are those of XLA's convolution
  (its VJP), which is what training used before and is faster than differentiating the Winograd
  transforms.
  """
  if xp.dtype != jnp.float32:  # the transforms' sums would cost bfloat16 too much precision
    return _conv_valid(xp, kernel)
  return _winograd_conv3x3(xp, kernel, tile)


def _conv3x3_fwd(xp, kernel, tile):
  return _conv3x3(xp, kernel, tile), (xp, kernel)


def _conv3x3_bwd(tile, residuals, g):
  del tile
  _, vjp = jax.vjp(_conv_valid, *residuals)
  return vjp(g)


_conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def _space_to_depth(x, s: int):
  # [B, s h, s w, C] -> [B, h, w, s s C], channels ordered (row phase, column phase, C).
  b, hh, ww, c = x.shape
  x = x.reshape(b, hh // s, s, ww // s, s, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, hh // s, ww // s, s * s * c)


def _depth_to_space(x, s: int):
  # [B, h, w, s s C] -> [B, s h, s w, C], the inverse of _space_to_depth.
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, s, s, c // (s * s)).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * s, w * s, c // (s * s))


def _block_taps(kernel: int, s: int) -> np.ndarray:
  # [3, s, s, k] one-hot: tap t of a k-tap filter at output phase a reads block D, phase u of the
  # space-to-depth(s) input where s D + u - a = t (s = k // 2 makes 3 blocks enough).
  sel = np.zeros((3, s, s, kernel), np.float32)
  for d, u, a in np.ndindex(3, s, s):
    if 0 <= s * d + u - a < kernel:
      sel[d, u, a, s * d + u - a] = 1.0
  return sel


def _conv_space_to_depth(x, kernel, *, padding: str):
  # A large stride-1 k x k convolution with few input or output channels (the 9x9 ones, 3 in or
  # 3 out) as a 3x3 convolution between space-to-depth(k // 2) blocks: s^2 I -> s^2 O channels.
  # 1.8x the multiplies for k = 9 (0.8x after Winograd), in matmul shapes that run far faster
  # than XLA:CPU's 9x9 convolutions with 3 channels. [B, H, W, I] x [k, k, I, O] -> [B, H, W, O]
  k, (b, h, w, c), o = kernel.shape[0], x.shape, kernel.shape[-1]
  s = k // 2
  hb, wb = -(-h // s), -(-w // s)
  xp = _pad_end(_pad_hw(x, k // 2, padding), s * (hb + 2), s * (wb + 2))
  sel = jnp.asarray(_block_taps(k, s))
  blocks = jnp.einsum("Duat,Evbr,trco->DEuvcabo", sel, sel, kernel.astype(jnp.float32))
  blocks = blocks.reshape(3, 3, s * s * c, s * s * o).astype(x.dtype)
  y = _conv3x3(_space_to_depth(xp, s), blocks)  # [B, hb, wb, s s O]
  return _depth_to_space(y, s)[:, :h, :w]


def conv2d(x, kernel, stride: int = 1, *, padding: str = "reflect"):
  """``conv_reference`` (same values within float rounding, same gradients), but faster on CPUs.

  Stride-1 3x3 convolutions use Winograd F(2x2, 3x3); larger stride-1 kernels become a 3x3
  convolution between space-to-depth pixel blocks, then Winograd too; stride 2 keeps XLA's
  convolution. In bfloat16, XLA's convolution replaces the Winograd step.

  Args:
    x: [B, H, W, I].
    kernel: [k, k, I, O] (HWIO, k odd), in ``x.dtype``.
    stride: 1 or 2.
    padding: "reflect" or "zero" (k // 2 on each side, Torch semantics).

  Returns:
    [B, ceil(H / stride), ceil(W / stride), O].

  References:
    Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016.
  """
  k = kernel.shape[0]
  if stride != 1 or k == 1:  # XLA's stride-2 convolutions beat the reformulations tried
    return conv_reference(x, kernel, stride, padding=padding)
  if k == 3:
    return _conv3x3(_pad_hw(x, 1, padding), kernel)
  return _conv_space_to_depth(x, kernel, padding=padding)


class _Conv(nn.Module):
  # nn.Conv's parameters ("kernel" [k, k, I, O] lecun-normal, "bias" [O] zeros, float32) around
  # a convolution function fn(x, kernel) -> [B, h, w, O].
  features: int
  kernel: int
  fn: Callable
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    shape = (self.kernel, self.kernel, x.shape[-1], self.features)
    kernel = self.param("kernel", nn.linear.default_kernel_init, shape, jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    return self.fn(x.astype(self.dtype), kernel.astype(self.dtype)) + bias.astype(self.dtype)


def conv_layer(x, features: int, kernel: int, stride: int = 1, *, padding: str = "reflect",
               dtype: Any = jnp.float32, name: str):
  """A k x k convolution with symmetric reflect or zero padding of k // 2 (Torch semantics).

  Call inside a compact ``__call__``: it creates the submodule ``name`` with ``nn.Conv``'s
  parameters (``kernel`` HWIO, ``bias``). With stride 2 the output is ceil(H / 2) x ceil(W / 2) as
  in the paper's Torch code (Flax's "SAME" would pad asymmetrically instead). Computed by
  ``conv2d``.

  Args:
    x: [B, H, W, C].
    features: output channels.
    kernel: the kernel size k (odd).
    stride: 1 or 2.
    padding: "reflect" or "zero".
    dtype: the compute dtype.
    name: the submodule name (caffe style, e.g. "conv1").

  Returns:
    [B, H / stride, W / stride, features].
  """
  fn = functools.partial(conv2d, stride=stride, padding=padding)
  return _Conv(features, kernel, fn, dtype, name=name)(x)


# Nearest x2 then a 3x3 convolution, per output phase a (row parity; likewise columns): the
# upsampled rows around output 2i + a are input rows (i - 1, i, i) for a = 0 and (i, i, i + 1)
# for a = 1, so each phase is a 2x2 convolution of the input with summed taps: [D, a, t] one-hot,
# block D of the input rows (i - 1 + a + D) takes kernel tap t.
_UPSAMPLE_TAPS = np.zeros((2, 2, 3), np.float32)
_UPSAMPLE_TAPS[0, 0, 0] = _UPSAMPLE_TAPS[1, 0, 1] = _UPSAMPLE_TAPS[1, 0, 2] = 1.0
_UPSAMPLE_TAPS[0, 1, 0] = _UPSAMPLE_TAPS[0, 1, 1] = _UPSAMPLE_TAPS[1, 1, 2] = 1.0


def upsample_conv_reference(x, kernel, *, padding: str = "reflect"):
  """Nearest-neighbour x2 upsampling, then ``conv_reference`` with a 3x3 kernel.

  Args:
    x: [B, h, w, I].
    kernel: [3, 3, I, O].
    padding: "reflect" or "zero".

  Returns:
    [B, 2h, 2w, O].
  """
  x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  return conv_reference(x, kernel, padding=padding)


def upsample_conv2d(x, kernel, *, padding: str = "reflect"):
  """``upsample_conv_reference`` without the upsampled intermediate (sub-pixel form).

  Reflect padding of the upsampled image equals edge padding of the input; each of the four
  output phases is then a 2x2 convolution of the input (all four as one convolution with 4 O
  outputs, 16 instead of 36 multiplies per output pixel and channel), interleaved by
  depth-to-space.

  Args:
    x: [B, h, w, I].
    kernel: [3, 3, I, O].
    padding: "reflect" or "zero".

  Returns:
    [B, 2h, 2w, O].

  References:
    Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
    Convolutional Neural Network", CVPR 2016.
  """
  b, h, w, c = x.shape
  o = kernel.shape[-1]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)),
               mode="edge" if padding == "reflect" else "constant")
  taps = jnp.asarray(_UPSAMPLE_TAPS)
  phases = jnp.einsum("Dat,Ebr,trco->DEcabo", taps, taps, kernel.astype(jnp.float32))
  r = _conv_valid(xp, phases.reshape(2, 2, c, 4 * o).astype(x.dtype))  # [B, h + 1, w + 1, 4 O]
  r = r.reshape(b, h + 1, w + 1, 2, 2, o)
  rows = [jnp.stack([r[:, a:a + h, e:e + w, a, e] for e in range(2)], 3) for a in range(2)]
  return jnp.stack(rows, 2).reshape(b, 2 * h, 2 * w, o)  # [B, h, 2, w, 2, O] interleaved


def _transpose_conv(features: int, dtype: Any, name: str) -> nn.Module:
  # Torch's SpatialFullConvolution(k=3, stride=2, pad=1, adj=1): the stride-dilated input is padded
  # by k - 1 - pad = 1 before and k - 1 - pad + adj = 2 after, which gives exactly 2H x 2W. The
  # kernel is Torch's flipped in H and W (Flax correlates the dilated input with it).
  return nn.ConvTranspose(features, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                          dtype=dtype, name=name)


def _upsample(x, features: int, *, mode: str, padding: str, dtype: Any, index: int):
  # [B, h, w, C] -> [B, 2h, 2w, features]
  if mode == "transpose":
    return _transpose_conv(features, dtype, f"deconv{index}")(x)
  fn = functools.partial(upsample_conv2d, padding=padding)  # nearest neighbour x2, 3x3 conv
  return _Conv(features, 3, fn, dtype, name=f"upconv{index}")(x)


def _norm(kind: str, train: bool, dtype: Any, name: str) -> nn.Module:
  if kind == "instance":
    # Per-image, per-channel statistics over H, W with a learned scale and bias.
    return nn.InstanceNorm(epsilon=1e-5, dtype=dtype, name=name)
  # Torch's momentum 0.1 for the running average is Flax's 0.9.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      name=name)


class ResidualBlock(nn.Module):
  """Two 3x3 convolutions with normalization, ReLU after the first only, identity shortcut.

  The paper's blocks use unpadded convolutions and crop the shortcut (with 40 pixels of reflection
  padding at the network's input); here both convolutions are padded so that sizes are preserved,
  as in most re-implementations.
  """

  features: int
  normalization: str = "instance"
  padding: str = "reflect"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):  # [B, H, W, C] -> [B, H, W, C]
    conv = functools.partial(conv_layer, padding=self.padding, dtype=self.dtype)
    y = conv(x, self.features, 3, name="conv1")
    y = nn.relu(_norm(self.normalization, train, self.dtype, "norm1")(y))
    y = conv(y, self.features, 3, name="conv2")
    y = _norm(self.normalization, train, self.dtype, "norm2")(y)
    return x + y


class TransformNet(nn.Module):
  """The image transformation network of Johnson et al. (2016), with the common variations.

  Architecture (channels at ``width=1``): c9s1-32, d64, d128, ``num_residual`` x R128, u64, u32,
  c9s1-3, where every convolution but the last is followed by normalization and ReLU. The output
  is ``(tanh(x) + 1) / 2``, exactly in [0, 1] (the paper's scaled tanh, mapped to our [0, 1]
  image range), then optionally blended with the input: ``(1 - a) * out + a * images``.

  Attributes:
    normalization: "instance" (Ulyanov et al. 2016, learned scale and bias; the default) or
      "batch" (the paper; statistics in the "batch_stats" collection, see ``train``).
    upsample: "transpose" (the paper's fractionally-strided 3x3 convolutions, layers
      ``deconv1/2``) or "resize" (nearest-neighbour x2 then a 3x3 convolution, layers
      ``upconv1/2``, which avoids checkerboard artifacts; Odena et al. 2016).
    padding: "reflect" (default) or "zero", for every ordinary convolution (the transposed ones
      always zero-pad, as in the paper).
    width: channel multiplier (e.g. 0.25 for a tiny, fast network); counts are rounded, >= 1.
    num_residual: the number of residual blocks (5 in the paper).
    input_blend: ``a`` above; 0 disables it, ``THESIS_INPUT_BLEND`` (0.15) is the thesis' value.
    output: "rgb" (the paper: the last 9x9 convolution gives the colours) or "affine" (for
      photorealism: a 3x4 colour transform per pixel p, ``out = A(p) images(p) + b(p)`` clipped
      to [0, 1], starting near the identity; see ``affine_grid`` for where it is computed). Such an
      output is locally affine in the input's colours, which is what the matting Laplacian
      leaves unpenalized; cf. Gharbi et al. 2017, Xia et al. 2020).
    affine_grid: with the "affine" head, 1 (default): the usual decoder, then a 3x3 ``conv_out``
      with 12 channels at every pixel; 4: no upsampling layers, a 3x3 ``conv_out`` on the
      quarter-resolution trunk, upsampled bilinearly (smooth in space by construction, cheaper,
      but blends the transforms of neighbouring regions across edges: worse photorealism and
      style in docs/fast_photoreal.md).
    dtype: the compute dtype (e.g. ``jnp.bfloat16``); parameters stay float32 and the output is
      float32.
  """

  normalization: str = "instance"
  upsample: str = "transpose"
  padding: str = "reflect"
  width: float = 1.0
  num_residual: int = 5
  input_blend: float = 0.0
  output: str = "rgb"
  affine_grid: int = 1
  dtype: Any = jnp.float32

  def channels(self, base: int) -> int:
    return max(1, int(round(base * self.width)))

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    """Stylizes ``images`` [B, H, W, 3] in [0, 1] (H, W divisible by 4) -> [B, H, W, 3] float32.

    Args:
      images: RGB [B, H, W, 3] in [0, 1].
      train: batch normalization only: use batch statistics and update the running averages
        (then call ``apply`` with ``mutable=["batch_stats"]``); otherwise the running averages.

    Returns:
      float32 [B, H, W, 3] in [0, 1].
    """
    check_options(self)
    _check_size(images.shape)
    conv = functools.partial(conv_layer, padding=self.padding, dtype=self.dtype)

    def norm_relu(x, name):
      return nn.relu(_norm(self.normalization, train, self.dtype, name)(x))

    x = images.astype(self.dtype) * 2.0 - 1.0  # [B, H, W, 3] centred
    x = norm_relu(conv(x, self.channels(32), 9, name="conv1"), "norm1")  # [B, H, W, 32]
    x = norm_relu(conv(x, self.channels(64), 3, 2, name="conv2"), "norm2")  # [B, H/2, W/2, 64]
    x = norm_relu(conv(x, self.channels(128), 3, 2, name="conv3"), "norm3")  # [B, H/4, W/4, 128]
    for i in range(1, self.num_residual + 1):
      x = ResidualBlock(self.channels(128), self.normalization, self.padding, self.dtype,
                        name=f"res{i}")(x, train=train)
    if self.output == "affine" and self.affine_grid == 4:
      # Colour transforms on the quarter-resolution trunk, upsampled bilinearly: smooth in
      # space by construction, so the output is locally affine in the input's colours.
      coeffs = conv(x, 12, 3, name="conv_out").astype(jnp.float32)  # [B, H/4, W/4, 12]
      coeffs = jax.image.resize(coeffs, images.shape[:3] + (12,), "linear")  # [B, H, W, 12]
      return self._blend(affine_output(coeffs, images.astype(jnp.float32)), images)
    for i, base in ((1, 64), (2, 32)):  # [B, H/2, W/2, 64], then [B, H, W, 32]
      x = _upsample(x, self.channels(base), mode=self.upsample, padding=self.padding,
                    dtype=self.dtype, index=i)
      x = norm_relu(x, f"norm{3 + i}")
    if self.output == "affine":  # per-pixel colour transforms (3x3: 4x cheaper than 9x9 here)
      coeffs = conv(x, 12, 3, name="conv_out").astype(jnp.float32)  # [B, H, W, 12]
      return self._blend(affine_output(coeffs, images.astype(jnp.float32)), images)
    x = conv(x, 3, 9, name="conv_out")  # [B, H, W, 3]
    return self._blend((jnp.tanh(x.astype(jnp.float32)) + 1.0) * 0.5, images)

  def _blend(self, out, images):
    if self.input_blend:
      return (1.0 - self.input_blend) * out + self.input_blend * images.astype(jnp.float32)
    return out


def affine_output(coeffs: jax.Array, images: jax.Array) -> jax.Array:
  """Per-pixel colour transforms applied to the input: the "affine" head of ``TransformNet``.

  Args:
    coeffs: [B, H, W, 12] raw head outputs: a 3x3 matrix (row-major, output colour first) then an
      offset, each scaled by ``AFFINE_SCALE``; the matrix is added to the identity.
    images: [B, H, W, 3] the network's input in [0, 1].

  Returns:
    ``clip((Id + s M) images + s b, 0, 1)``, float32 [B, H, W, 3].
  """
  coeffs = AFFINE_SCALE * coeffs
  matrix = coeffs[..., :9].reshape(coeffs.shape[:-1] + (3, 3))  # [B, H, W, out, in]
  out = images + jnp.einsum("bhwoi,bhwi->bhwo", matrix, images) + coeffs[..., 9:]
  return jnp.clip(out, 0.0, 1.0)


def check_options(model: TransformNet) -> None:
  """Raises ``UserError`` for an unknown option value of a ``TransformNet``."""
  for attr, valid in (("normalization", NORMALIZATIONS), ("upsample", UPSAMPLES),
                      ("padding", PADDINGS), ("output", OUTPUTS)):
    if getattr(model, attr) not in valid:
      raise UserError(f"unknown {attr} {getattr(model, attr)!r}; expected one of {valid}")
  if model.affine_grid not in (1, 4):
    raise UserError(f"affine_grid must be 1 or 4, got {model.affine_grid}")
  if not model.width > 0 or model.num_residual < 0 or not 0.0 <= model.input_blend < 1.0:
    raise UserError(f"invalid network size or blend: width={model.width} (> 0), "
                    f"num_residual={model.num_residual} (>= 0), "
                    f"input_blend={model.input_blend} (in [0, 1))")


def _check_size(shape: tuple[int, ...]) -> None:
  if len(shape) != 4 or shape[-1] != 3:
    raise ValueError(f"expected RGB images [B, H, W, 3], got shape {shape}")
  if shape[1] % MULTIPLE or shape[2] % MULTIPLE:
    raise ValueError(f"image height and width must be divisible by {MULTIPLE}, got {shape[1:3]}; "
                     "use nets.stylize_any_size for other sizes")


# Presets. The paper's network; the reference thesis' (instance norm, reflection padding,
# resize-convolution upsampling); a tiny one for tests.
JohnsonNet = functools.partial(TransformNet, normalization="batch", upsample="transpose",
                               padding="zero")
ThesisNet = functools.partial(TransformNet, normalization="instance", upsample="resize",
                              padding="reflect")
TinyNet = functools.partial(TransformNet, width=0.125, num_residual=1)


def init_variables(model: nn.Module, key: jax.Array, *, size: int = 64) -> dict:
  """Initializes ``model`` on a dummy [1, size, size, 3] batch; returns its variables.

  Args:
    model: a ``TransformNet`` (sizes do not depend on ``size``, a multiple of 4).
    key: a ``jax.random`` key.
    size: the dummy image size.

  Returns:
    ``{"params": ...}`` plus ``{"batch_stats": ...}`` for batch normalization.
  """
  return model.init(key, jnp.zeros((1, size, size, 3), jnp.float32))


def count_params(variables: Any) -> int:
  """The number of trainable scalars: of ``variables["params"]`` if present, else of the tree.

  Works on arrays and on ``jax.ShapeDtypeStruct`` leaves (from ``jax.eval_shape(model.init, ...)``).
  """
  tree = variables.get("params", variables) if hasattr(variables, "get") else variables
  return int(sum(math.prod(np.shape(leaf)) for leaf in jax.tree_util.tree_leaves(tree)))


def pad_to_multiple(images: jax.Array, multiple: int = MULTIPLE,
                    ) -> tuple[jax.Array, tuple[tuple[int, int], tuple[int, int]]]:
  """Reflect-pads [B, H, W, C] images so that H and W are multiples of ``multiple``.

  The padding is split between both sides (the extra pixel, if any, after).

  Args:
    images: [B, H, W, C].
    multiple: the required divisor of the output height and width.

  Returns:
    ``(padded [B, H', W', C], ((top, bottom), (left, right)))``; undo with ``crop_padding``.
  """
  pads = []
  for n in images.shape[1:3]:
    extra = -n % multiple
    pads.append((extra // 2, extra - extra // 2))
  padded = jnp.pad(images, ((0, 0), pads[0], pads[1], (0, 0)), mode="reflect")
  return padded, (pads[0], pads[1])


def crop_padding(images: jax.Array, pads: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """Undoes ``pad_to_multiple``: [B, H', W', C] -> [B, H, W, C]."""
  (top, bottom), (left, right) = pads
  h, w = images.shape[1:3]
  return images[:, top:h - bottom, left:w - right, :]


def apply_any_size(apply_fn: Callable[[jax.Array], jax.Array], images: jax.Array) -> jax.Array:
  """Pads ``images`` [B, H, W, C] to a multiple of 4, calls ``apply_fn``, crops back."""
  padded, pads = pad_to_multiple(images, MULTIPLE)
  return crop_padding(apply_fn(padded), pads)


def stylize_any_size(model: nn.Module, variables: Any, images: jax.Array) -> jax.Array:
  """Applies a transformation network (inference mode) to images of any size.

  Args:
    model: a ``TransformNet``.
    variables: its variables (``params`` and, for batch norm, ``batch_stats``).
    images: RGB [B, H, W, 3] in [0, 1], any H, W >= 1.

  Returns:
    float32 [B, H, W, 3] in [0, 1].
  """
  return apply_any_size(lambda x: model.apply(variables, x, train=False), images)
