"""Convolutions for the transform networks, reformulated for XLA:CPU (same values and gradients).

Synopsis::

  from nst_jax.core import conv
  y = conv.conv2d(x, kernel, stride=1, padding="reflect")   # [B, H, W, I] x [k, k, I, O]
  y = conv.upsample_conv2d(x, kernel, padding="reflect")    # nearest x2, then 3x3 conv
  conv.conv_reference(x, kernel)                            # plain XLA, for tests
  conv.resolve_impl("auto")          # "cpu_fast" on the CPU backend, else "xla"
  y = conv.conv2d(x, kernel, impl="xla")                    # conv_reference, whatever the backend

XLA:CPU runs 3x3 convolutions with many channels well below the machine's matmul speed, and 9x9
ones with 3 channels at a few GFLOP/s (benchmarks/transform_net_profile.py). Here stride-1 3x3
convolutions are Winograd F(2x2, 3x3) batched matmuls, large stride-1 kernels a 3x3 convolution
between space-to-depth pixel blocks (one matmul, im2col or col2im), and nearest-x2 upsampling
followed by a 3x3 convolution one sub-pixel convolution of the small input. Tests compare each with
``conv_reference`` / ``upsample_conv_reference``, values and gradients. These reformulations (and
``vgg.conv3x3``'s custom VJP) are chosen by ``impl`` (``config.CONV_IMPLS``): "auto" uses them only
on the CPU backend and lets XLA's own convolutions (cuDNN on GPUs) run everywhere else.

References:
  Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016.
  Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
  Convolutional Neural Network", CVPR 2016.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.config import CONV_IMPLS
from nst_jax.core.errors import UserError

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def resolve_impl(impl: str) -> str:
  """The convolution implementation ``impl`` names on the current backend, at trace time.

  Args:
    impl: one of ``config.CONV_IMPLS``: "auto" (the CPU kernels on the CPU backend only),
      "xla" (``lax.conv_general_dilated`` differentiated by JAX) or "cpu_fast" (the kernels of
      this module and ``vgg.conv3x3``, written to beat XLA:CPU).

  Returns:
    "xla" or "cpu_fast".

  Raises:
    UserError: for a value not in ``config.CONV_IMPLS``.
  """
  if impl not in CONV_IMPLS:
    raise UserError(f"unknown conv_impl {impl!r}; expected one of {', '.join(CONV_IMPLS)}")
  if impl == "auto":
    return "cpu_fast" if jax.default_backend() == "cpu" else "xla"
  return impl


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
# m for float32 stride-1 3x3 convolutions. m = 4 runs the residual blocks faster, but its output
# error exceeds the 1e-5 to which tests/test_inference.py compares two tilings of the same image
# (docs/research/implementation_notes.md).
WINOGRAD_TILE = 2


def _combine(coeffs, xs):
  # sum_i coeffs[i] * xs[i] with the zero terms left out, as elementwise ops XLA fuses.
  terms = [x if c == 1 else -x if c == -1 else x * float(c) for c, x in zip(coeffs, xs) if c]
  return functools.reduce(lambda a, b: a + b, terms)


def _winograd_tiles(xp, m: int, tiles_h: int, tiles_w: int):
  # [B, m (th + 1), m (tw + 1), C] -> [n^2, B th tw, C] (n = m + 2): B^T d B for each overlapping
  # n x n tile d, as two separable passes (rows, then columns) over unstrided slices, which
  # XLA:CPU fuses into two vectorized loops (one pass over n^2 strided slices is slower).
  bt, n = _WINOGRAD[m][0], m + 2
  b, _, wp, c = xp.shape
  rows = xp.reshape(b, tiles_h + 1, m, wp, c)
  d = [rows[:, r // m:r // m + tiles_h, r % m] for r in range(n)]  # [B, th, Wp, C] each
  e = jnp.stack([_combine(bt[i], d) for i in range(n)])  # [n, B, th, Wp, C]
  cols = e.reshape(n, b, tiles_h, tiles_w + 1, m, c)
  f = [cols[:, :, :, s // m:s // m + tiles_w, s % m] for s in range(n)]  # [n, B, th, tw, C]
  v = jnp.stack([_combine(bt[j], f) for j in range(n)], 1)  # [n, n, B, th, tw, C]
  return v.reshape(n * n, b * tiles_h * tiles_w, c)


def winograd_kernel(kernel, m: int = WINOGRAD_TILE):
  """A 3x3 kernel [3, 3, I, O] in Winograd F(m x m, 3x3)'s domain, U = G k G^T: [(m + 2)^2, I, O].

  Sums of scaled taps (elementwise, fused): XLA:CPU runs an einsum with a contraction of 3 far
  slower (docs/research/implementation_notes.md).
  """
  g, n = _WINOGRAD[m][1], m + 2
  k = kernel.astype(jnp.float32)
  rows = [_combine(g[i], [k[r] for r in range(3)]) for i in range(n)]  # [3, I, O] each
  return jnp.stack([_combine(g[j], [rows[i][s] for s in range(3)])
                    for i in range(n) for j in range(n)])


# F(2x2, 3x3): G applied to reversed taps is G with rows 0 and 3 swapped, so the spatially
# flipped kernel's U is U at these (row, column) indices; the input gradient also swaps I and O.
_FLIP_2 = np.array([(3 - i if i in (0, 3) else i) * 4 + (3 - j if j in (0, 3) else j)
                    for i in range(4) for j in range(4)])


def _winograd_conv3x3(xp, kernel, m: int = WINOGRAD_TILE, *, u=None, flipped: bool = False):
  # VALID 3x3 correlation [B, H + 2, W + 2, I] x [3, 3, I, O] -> [B, H, W, O] (any H, W), or
  # with ``u = winograd_kernel(kernel)`` given; ``flipped``: with the flipped, I/O-swapped kernel
  # (the input gradient's), from the original kernel's ``u`` (m = 2).
  at = _WINOGRAD[m][2]
  u = winograd_kernel(kernel, m) if u is None else u
  b, hp, wp, _ = xp.shape
  h, w, n = hp - 2, wp - 2, m + 2
  th, tw = -(-h // m), -(-w // m)
  v = _winograd_tiles(_pad_end(xp, m * (th + 1), m * (tw + 1)), m, th, tw)  # [n^2, T, C]
  if flipped:
    prod = jnp.einsum("ktc,koc->kto", v, u[_FLIP_2].astype(xp.dtype))  # contracts over O
  else:
    prod = jnp.einsum("ktc,kco->kto", v, u.astype(xp.dtype))
  o = prod.shape[-1]
  prod = prod.reshape(n, n, b, th, tw, o)
  rows = jnp.stack([_combine(at[a], [prod[i] for i in range(n)]) for a in range(m)])
  y = jnp.stack([_combine(at[e], [rows[:, j] for j in range(n)]) for e in range(m)], -2)
  y = jnp.moveaxis(y, 0, 2)  # [m (a), B, th, tw, m (e), O] -> [B, th, m, tw, m, O]
  return y.reshape(b, m * th, m * tw, o)[:, :h, :w]


def winograd_conv3x3_same(x, u, *, flipped: bool = False, strip_pixels: int | None = None):
  """SAME (zero-padded) 3x3 correlation [B, H, W, I] -> [B, H, W, O] by Winograd F(2x2, 3x3)
  batched matmuls, float32, with ``u = winograd_kernel(kernel)`` ([16, I, O]). ``flipped``:
  with the flipped, I/O-swapped kernel instead ([B, H, W, O] -> [B, H, W, I]: the input
  gradient of the correlation with ``kernel``), from the same ``u``.

  What ``vgg.conv3x3`` runs on CPUs for VGG's wide layers, where it beats XLA:CPU's convolution
  (with 64-128 channels it is slower); the transforms, 4 (I + O) floats per output pixel, are
  transient. ``strip_pixels``: an image of more output pixels runs in row strips of about that
  many (a ``fori_loop``, one after the other, each with its 1-row halo), so the transforms of
  one strip at a time are alive; the strips start on even rows, so every 2x2 tile is the one the
  whole image would have (the same values up to the matmuls' summation order).
  """
  xp = _pad_hw(x, 1, "zero")
  b, h, w, _ = x.shape
  if strip_pixels is None or b * h * w <= strip_pixels:
    return _winograd_conv3x3(xp, None, 2, u=u, flipped=flipped)
  rows = max(2, strip_pixels // (b * w) // 2 * 2)
  n = -(-h // rows)
  xp = jnp.pad(xp, ((0, 0), (0, n * rows - h), (0, 0), (0, 0)))

  def conv_strip(i):
    xs = jax.lax.dynamic_slice_in_dim(xp, i * rows, rows + 2, axis=1)
    return _winograd_conv3x3(xs, None, 2, u=u, flipped=flipped)

  def strip(i, y):
    return jax.lax.dynamic_update_slice_in_dim(y, conv_strip(i), i * rows, axis=1)

  # The output buffer, made from the first strip, is written strip by strip in place. Not
  # ``lax.map``: its stacked output starts from a constant 0 that XLA shares between all the
  # layers' loops, copies for each and hoists to the start of the evaluation (every wide layer's
  # output alive through it); so would a 0 here that did not depend on this layer's data.
  y = jnp.pad(conv_strip(0), ((0, 0), (0, (n - 1) * rows), (0, 0), (0, 0)))
  return jax.lax.fori_loop(1, n, strip, y)[:, :h]


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


def space_to_depth(x, s: int):
  """[B, s h, s w, C] -> [B, h, w, s s C]: s x s pixel blocks as channels, ordered (row phase,
  column phase, C)."""
  b, hh, ww, c = x.shape
  x = x.reshape(b, hh // s, s, ww // s, s, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, hh // s, ww // s, s * s * c)


def depth_to_space(x, s: int):
  """[B, h, w, s s C] -> [B, s h, s w, C], the inverse of ``space_to_depth``."""
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
  # 1.8x the multiplies for k = 9, in one matmul that runs far faster than XLA:CPU's 9x9
  # convolutions with 3 channels. [B, H, W, I] x [k, k, I, O] -> [B, H, W, O]
  k, (_, h, w, c), o = kernel.shape[0], x.shape, kernel.shape[-1]
  s = k // 2
  hb, wb = -(-h // s), -(-w // s)
  xp = _pad_end(_pad_hw(x, k // 2, padding), s * (hb + 2), s * (wb + 2))
  sel = jnp.asarray(_block_taps(k, s))
  blocks = jnp.einsum("Duat,Evbr,trco->DEuvcabo", sel, sel, kernel.astype(jnp.float32))
  blocks = blocks.reshape(3, 3, s * s * c, s * s * o).astype(x.dtype)
  xs = space_to_depth(xp, s)
  if x.dtype != jnp.float32:
    y = _conv3x3(xs, blocks)  # XLA's convolution in bfloat16
  elif c < o:  # 3 -> 32 (48 -> 512 between blocks)
    y = im2col_conv3x3(xs, blocks)
  else:  # 32 -> 3 (512 -> 48)
    y = _col2im_conv3x3(xs, blocks)
  return depth_to_space(y, s)[:, :h, :w]


# Two one-matmul forms of a VALID 3x3 correlation [B, H + 2, W + 2, I] x [3, 3, I, O] ->
# [B, H, W, O] for the space-to-depth blocks of the 9x9 convolutions, whose narrow side (3
# channels: 48 between 4x4 blocks) would make Winograd's sixteen products short and its transforms
# of the wide side expensive; they are faster than Winograd there at every size measured
# (docs/research/implementation_notes.md).
def im2col_conv3x3(xp, kernel):
  """VALID 3x3 correlation [B, H + 2, W + 2, I] x [3, 3, I, O] -> [B, H, W, O] as one matmul:
  the nine shifted copies side by side [B, H, W, 9 I] times the kernel [9 I, O] (for few
  inputs, or few pixels)."""
  b, hp, wp, c = xp.shape
  h, w = hp - 2, wp - 2
  cols = jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], -1)
  return jnp.einsum("bhwk,ko->bhwo", cols, kernel.reshape(9 * c, -1))


def _col2im_conv3x3(xp, kernel):
  # Few outputs: every tap's contribution at once, [B, H + 2, W + 2, I] times [I, 9 O], then the
  # nine shifted slices summed.
  b, hp, wp, c = xp.shape
  h, w, o = hp - 2, wp - 2, kernel.shape[-1]
  z = jnp.einsum("bhwc,cq->bhwq", xp, kernel.transpose(2, 0, 1, 3).reshape(c, 9 * o))
  z = z.reshape(b, hp, wp, 9, o)
  return sum(z[:, i:i + h, j:j + w, 3 * i + j] for i in range(3) for j in range(3))


def conv2d(x, kernel, stride: int = 1, *, padding: str = "reflect", impl: str = "auto"):
  """``conv_reference`` (same values within float rounding, same gradients), but faster on CPUs.

  Stride-1 3x3 convolutions use Winograd F(2x2, 3x3); larger stride-1 kernels become a 3x3
  convolution between space-to-depth pixel blocks, computed as one matmul (im2col when the input
  has fewer channels than the output, col2im otherwise); stride 2 keeps XLA's convolution. In
  bfloat16, XLA's convolution replaces the Winograd and block steps.

  Args:
    x: [B, H, W, I].
    kernel: [k, k, I, O] (HWIO, k odd), in ``x.dtype``.
    stride: 1 or 2.
    padding: "reflect" or "zero" (k // 2 on each side, Torch semantics).
    impl: ``resolve_impl``'s argument; "xla" is ``conv_reference`` itself.

  Returns:
    [B, ceil(H / stride), ceil(W / stride), O].

  References:
    Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016.
  """
  k = kernel.shape[0]
  if resolve_impl(impl) == "xla" or stride != 1 or k == 1:  # XLA's stride-2 convolutions beat the reformulations tried
    return conv_reference(x, kernel, stride, padding=padding)
  if k == 3:
    return _conv3x3(_pad_hw(x, 1, padding), kernel)
  return _conv_space_to_depth(x, kernel, padding=padding)


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


def upsample_conv2d(x, kernel, *, padding: str = "reflect", impl: str = "auto"):
  """``upsample_conv_reference`` without the upsampled intermediate (sub-pixel form).

  Reflect padding of the upsampled image equals edge padding of the input; each of the four
  output phases is then a 2x2 convolution of the input (all four as one convolution with 4 O
  outputs, 16 instead of 36 multiplies per output pixel and channel), interleaved by
  depth-to-space. Arguments and result as ``upsample_conv_reference``: x [B, h, w, I], kernel
  [3, 3, I, O], padding "reflect" or "zero" -> [B, 2h, 2w, O]; ``impl`` as ``conv2d``'s ("xla":
  ``upsample_conv_reference`` itself).

  References:
    Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
    Convolutional Neural Network", CVPR 2016.
  """
  if resolve_impl(impl) == "xla":
    return upsample_conv_reference(x, kernel, padding=padding)
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


# XLA:CPU differentiates a convolution for its kernel (the weight gradient) fast with 32 or 64
# output channels and several times slower with others (48 outputs slower than 64; 192 slower
# than three groups of 64). Measured in benchmarks/sr_torch_bench.py's profile (BENCHMARKS.md,
# "SR against PyTorch"; docs/research/implementation_notes.md).
OUT_GROUP = 64


def grouped_out_conv(lhs, rhs, *args, **kwargs):
  """``lax.conv_general_dilated`` with HWIO kernels and channels-last outputs, computed for
  more than 32 outputs as groups of ``OUT_GROUP`` (the last one zero-padded) and concatenated.

  The same values (exactly: each output channel is the same sum) and gradients; the kernel's
  gradient comes out of XLA:CPU's fast paths. A drop-in ``conv_general_dilated`` for
  ``flax.linen.Conv`` (whose dimension numbers are NHWC, HWIO, NHWC).
  """
  o = rhs.shape[-1]
  if o <= 32:
    return jax.lax.conv_general_dilated(lhs, rhs, *args, **kwargs)
  extra = -o % OUT_GROUP
  rhs = jnp.pad(rhs, ((0, 0),) * (rhs.ndim - 1) + ((0, extra),))
  outs = [jax.lax.conv_general_dilated(lhs, rhs[..., i:i + OUT_GROUP], *args, **kwargs)
          for i in range(0, o + extra, OUT_GROUP)]
  out = outs[0] if len(outs) == 1 else jnp.concatenate(outs, -1)
  return out[..., :o]
