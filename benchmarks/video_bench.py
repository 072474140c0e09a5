"""Video: temporal consistency (warping error) and style loss, per-frame vs consistent (issue 39).

Synopsis::

  PYTHONPATH=. python3 benchmarks/video_bench.py                         # 4 synthetic clips
  PYTHONPATH=. python3 benchmarks/video_bench.py --clips pan object --frames 48 --size 256
  PYTHONPATH=. python3 benchmarks/video_bench.py --clip my_clip.mp4      # your own clip
  PYTHONPATH=. python3 benchmarks/video_bench.py --throughput-only --throughput-size 512
  PYTHONPATH=. python3 benchmarks/video_bench.py --method slow --clips pan object --frames 8 \
      --size 128 --iters 60                # the slow method against per-frame slow transfer

Clips: made from a ../shared photo with KNOWN motion, so the true flow and occlusions are exact:
``pan`` (a translation of 1.7, 0.6 px per frame at 256 px), ``zoom`` (1% per frame about the
centre), ``rotate`` (0.5 degree per frame about the centre), ``object`` (a disc cut from another
photo moving 2.3 px per frame over a static background: its trailing edge disoccludes the
background). Each frame samples the photo through a 2-D affine map (bilinear, OpenCV), so frame t
at pixel x shows photo(A_t x + b_t); the true backward flow of frame t into t-1 is
A_{t-1}^{-1}(A_t x + b_t - b_{t-1}) - x, valid where it lands inside frame t-1 (and, for
``object``, where the pixel was not hidden by the disc at t-1). ``--clip PATH`` reads a user's
clip (from ``--clip-start`` seconds) instead; its true flow is unknown, so E_warp is measured under
the flow estimated on the INPUT frames (``core.flow``: DIS, with Ruder et al.'s reliability mask),
as Lai et al. do with FlowNet2. That is the flow the consistency step itself uses, so that row is
optimistic for it. Each row records its flow (``"flow"``: "true" or "dis") and prints it.

Metric (Lai et al. 2018): E_warp = mean over t of the masked mean squared difference (RGB in
[0, 1]) between output t and output t-1 warped by the true flow; style loss = the network's
training objective's style term (``bench_common.quality_loss``) of each output, averaged over
frames. The table gives per-frame vs consistent and their ratios (goals: E_warp <= 0.5x at
<= 1.1x style loss). Throughput: frames/s of ``fast.video.stylize_frames`` at
``--throughput-size`` (flow included; per-frame alongside), host frames in and out.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time

import bench_common as bc
import cv2
import jax.numpy as jnp
import numpy as np

from nst_jax import config
from nst_jax.core import flow as flow_lib
from nst_jax.core import image_io, objective, video_io
from nst_jax.fast import inference, nets, training
from nst_jax.fast import video as fast_video
from nst_jax.slow import video as slow_video

CLIPS = ("pan", "zoom", "rotate", "object")
BACKGROUND = "kodak/kodim08.jpg"
OBJECT = "kodak/kodim23.jpg"


def affine_motion(kind: str, t: int, hw: tuple[int, int]) -> np.ndarray:
  """The 2x3 map M_t (frame pixel -> photo pixel) of frame t for a global-motion clip."""
  h, w = hw
  centre = np.array([w / 2, h / 2])
  scale = w / 256  # the motions are given at 256 px
  if kind == "pan":
    a, b = np.eye(2), np.array([w * 0.25, h * 0.25]) + t * scale * np.array([1.7, 0.6])
  elif kind == "zoom":
    a = np.eye(2) / (1.01 ** t)  # zooming in: each frame shows 1% less of the photo
    b = centre + np.array([w * 0.25, h * 0.25]) - a @ centre
  elif kind == "rotate":
    th = np.deg2rad(0.5 * t)
    a = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) * 0.8
    b = centre + np.array([w * 0.25, h * 0.25]) - a @ centre
  else:
    raise ValueError(kind)
  return np.concatenate([a, b[:, None]], axis=1)


def sample(photo: np.ndarray, m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """frame(x) = photo(M x) (bilinear)."""
  return cv2.warpAffine(photo, m.astype(np.float64), (hw[1], hw[0]),
                        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_REFLECT)


def true_flow(m_prev: np.ndarray, m_cur: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """Backward flow of frame t (map ``m_cur``) into frame t-1 (``m_prev``): [H, W, 2]."""
  ys, xs = np.mgrid[:hw[0], :hw[1]].astype(np.float64)
  pts = np.stack([xs, ys, np.ones_like(xs)], -1) @ m_cur.T  # photo points [H, W, 2]
  inv = np.linalg.inv(m_prev[:, :2])
  prev = (pts - m_prev[:, 2]) @ inv.T
  return (prev - np.stack([xs, ys], -1)).astype(np.float32)


def global_clip(kind: str, photo: np.ndarray, hw: tuple[int, int], frames: int):
  maps = [affine_motion(kind, t, hw) for t in range(frames)]
  clip = [sample(photo, m, hw) for m in maps]
  flows = [true_flow(maps[t - 1], maps[t], hw) for t in range(1, frames)]
  masks = [flow_lib.inside_mask(f) for f in flows]
  return clip, flows, masks


def object_clip(background: np.ndarray, thing: np.ndarray, hw: tuple[int, int], frames: int):
  """A disc of ``thing`` moving right and down over a static ``background``."""
  h, w = hw
  bg = sample(background, affine_motion("pan", 0, hw), hw)
  tex = sample(thing, affine_motion("pan", 0, hw), hw)
  radius = 0.22 * min(h, w)
  velocity = np.array([2.3, 0.8]) * w / 256
  ys, xs = np.mgrid[:h, :w].astype(np.float32)
  clip, flows, masks, discs = [], [], [], []
  for t in range(frames):
    c = np.array([0.25 * w, 0.35 * h]) + t * velocity
    disc = ((xs - c[0]) ** 2 + (ys - c[1]) ** 2 <= radius ** 2)
    # the disc's texture moves with it: texture point = frame point - t * velocity
    moved = sample(tex, np.array([[1, 0, -t * velocity[0]], [0, 1, -t * velocity[1]]]), hw)
    clip.append(np.where(disc[..., None], moved, bg))
    discs.append(disc)
    if t:
      f = np.zeros((h, w, 2), np.float32)
      f[disc] = -velocity
      occluded = ~disc & discs[t - 1]  # background hidden by the disc at t-1
      masks.append(flow_lib.inside_mask(f) * (~occluded).astype(np.float32))
      flows.append(f)
  return clip, flows, masks


def make_clip(name: str, data, hw: tuple[int, int], frames: int):
  """(frames uint8, true flows, true masks) of a synthetic clip."""
  big = (hw[0] * 2, hw[1] * 2)  # the photo at twice the frame's size: room to move
  photo = image_io.to_uint8(image_io.load_image(data / "content" / BACKGROUND, size=max(big)))
  if name == "object":
    thing = image_io.to_uint8(image_io.load_image(data / "content" / OBJECT, size=max(big)))
    return object_clip(photo, thing, hw, frames)
  return global_clip(name, photo, hw, frames)


FLOWS = {"true": "true flow and occlusions (synthetic clip)",
         "dis": "DIS flow estimated on the input frames, Ruder et al.'s mask (core.flow)"}


def user_clip(path: str, size: int, frames: int, start: float = 0.0):
  """A user's clip: ``frames`` frames from ``start`` seconds, flows and masks estimated on the
  input frames (``core.flow``)."""
  clip = []
  for frame in video_io.read_frames(path, size=size, start=start):
    clip.append(frame)
    if len(clip) == frames:
      break
  flows, masks = [], []
  for prev, cur in itertools.pairwise(clip):
    back, fwd = flow_lib.compute_flow(prev, cur), flow_lib.compute_flow(cur, prev)
    flows.append(back)
    masks.append(flow_lib.reliable_mask(back, fwd))
  return clip, flows, masks


def style_loss(vgg_params, outputs, clip, targets, loss_cfg, every: int) -> float:
  return float(np.mean([bc.quality_loss(vgg_params, o, f.astype(np.float32) / 255, targets,
                                        loss_cfg)["style"]
                        for o, f in list(zip(outputs, clip))[::every]]))


def evaluate(name, clip, flows, masks, stylizer, weights, vgg_params, targets, loss_cfg, every,
             modes=("blend",)):
  """One clip's row: E_warp and style loss per frame, and consistent at each of ``weights`` for
  the blend mode and once for each other mode (the same per-frame stylizations, made
  consistent: ``fast.video.make_consistent``); keys "0.3" (blend weights) or the mode's name."""
  plain = list(fast_video.stylize_frames(stylizer, clip, temporal=False))
  row = {"clip": name, "frames": len(clip), "hw": list(clip[0].shape[:2]), "flow": flow_kind(name),
         "input_e_warp": fast_video.warping_error([f / 255.0 for f in clip], flows, masks),
         "per_frame": {"e_warp": fast_video.warping_error(plain, flows, masks),
                       "style": style_loss(vgg_params, plain, clip, targets, loss_cfg, every)},
         "consistent": {}}
  outputs = {}
  runs = [(str(w), "blend", w) for w in weights if "blend" in modes]
  runs += [(m, m, fast_video.DEFAULT_WEIGHT) for m in modes if m != "blend"]
  for key, mode, weight in runs:
    t0 = time.perf_counter()
    outs = list(fast_video.make_consistent(clip, plain, weight=weight, mode=mode))
    seconds = time.perf_counter() - t0
    e_warp = fast_video.warping_error(outs, flows, masks)
    style = style_loss(vgg_params, outs, clip, targets, loss_cfg, every)
    row["consistent"][key] = {
        "e_warp": e_warp, "style": style, "seconds_temporal_step": seconds,
        "e_warp_ratio": e_warp / row["per_frame"]["e_warp"],
        "style_ratio": style / row["per_frame"]["style"]}
    outputs[key] = outs
  return row, plain, outputs


def flow_kind(name: str) -> str:
  """"true" for a synthetic clip, "dis" for a user's (``FLOWS``)."""
  return "true" if name in CLIPS else "dis"


def texture(hw: tuple[int, int], seed: int = 0) -> np.ndarray:
  """A smooth random RGB texture, uint8 (needs no data files: the GPU machine has none)."""
  noise = np.random.default_rng(seed).random(hw + (3,)).astype(np.float32)
  img = cv2.GaussianBlur(noise, (0, 0), 2.0)
  return image_io.to_uint8((img - img.min()) / (img.max() - img.min()))


def throughput(stylizer, size: int, frames: int, modes=("blend",)) -> dict:
  """frames/s of stylize_frames at ``size`` px on a panning texture, per-frame and consistent
  (flow included) in each of ``modes`` (key "consistent": the blend; else the mode's name),
  alternated twice, after a warm-up that compiles."""
  hw = memory_hw(size)
  clip = global_clip("pan", texture((hw[0] * 2, hw[1] * 2)), hw, frames)[0]
  list(fast_video.stylize_frames(stylizer, clip[:3]))  # compile both programs
  result = {"size": size, "hw": list(hw), "frames": frames, "per_frame": [], "consistent": [],
            "batch_size": stylizer.batch_size}
  runs = [("per_frame", False, "blend")]
  runs += [("consistent" if m == "blend" else m, True, m) for m in modes]
  for key, _, _ in runs[1:]:
    result.setdefault(key, [])
  for _ in range(2):
    for key, temporal, mode in runs:
      t0 = time.perf_counter()
      for _ in fast_video.stylize_frames(stylizer, clip, temporal=temporal, mode=mode):
        pass
      result[key].append(frames / (time.perf_counter() - t0))
  for key, _, _ in runs:
    result[key + "_fps"] = max(result[key])
  return result


def memory_hw(size: int) -> tuple[int, int]:
  return (size * 3 // 4, size)  # 4:3 frames, long side ``size``


def save_strip(path, clip, plain, consistent, picks, flows=None, gain: float = 4.0) -> None:
  """Rows: input, per-frame, each of the ``consistent`` sequences; columns: frames ``picks``
  (a JPEG). With ``flows`` (``flows[t-1]``: frame t into t-1), each output row is followed by
  its flicker map: ``gain`` x |output t - output t-1 warped onto t|, the per-pixel term of
  E_warp (black: steady)."""
  def row(seq, flicker=False):
    frames = [np.asarray(f, np.float32) / (255 if seq is clip else 1) for f in seq]
    if flicker:
      return np.concatenate([np.clip(gain * np.abs(frames[i] - flow_lib.remap(
          frames[i - 1], flows[i - 1])), 0, 1) for i in picks], axis=1)
    return np.concatenate([frames[i] for i in picks], axis=1)
  rows = [row(clip)]
  for seq in (plain, *consistent):
    rows += [row(seq)] + ([row(seq, True)] if flows is not None else [])
  image_io.save_image(path, np.concatenate(rows, axis=0))


def print_row(row: dict) -> None:
  base = row["per_frame"]
  print(f"{row['clip']} ({FLOWS[row['flow']]})", flush=True)
  print(f"{'':<10} input E_warp {row['input_e_warp']:.5f}; per-frame E_warp "
        f"{base['e_warp']:.5f} style {base['style']:.4g}", flush=True)
  for weight, r in row["consistent"].items():
    print(f"{'':<10} consistent {weight:<9} E_warp {r['e_warp']:.5f} (x{r['e_warp_ratio']:.3f})"
          f"  style {r['style']:.4g} (x{r['style_ratio']:.3f})", flush=True)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  bc.add_common_args(p, out=bc.RESULTS / "video_bench.json")
  p.add_argument("--model", default="starry_lite")
  p.add_argument("--clips", nargs="*", default=list(CLIPS), choices=CLIPS)
  p.add_argument("--clip", default=None, help="a video file or frame folder of your own (E_warp "
                 "then under DIS flow estimated on its input frames)")
  p.add_argument("--clip-start", type=float, default=0.0, help="--clip: skip this many seconds")
  p.add_argument("--frames", type=int, default=48)
  p.add_argument("--size", type=int, default=256, help="frames' long side for the quality table")
  p.add_argument("--weights", type=float, nargs="+", default=[fast_video.DEFAULT_WEIGHT],
                 help="blend weights of the consistency step to compare")
  p.add_argument("--modes", nargs="+", default=["blend"], choices=fast_video.MODES,
                 help="temporal modes to compare (blend: at each of --weights)")
  p.add_argument("--loss-every", type=int, default=4, help="style loss of every N-th frame")
  p.add_argument("--throughput-size", type=int, default=512)
  p.add_argument("--throughput-frames", type=int, default=16, help="0: no throughput run")
  p.add_argument("--throughput-only", action="store_true",
                 help="only the speed (needs no VGG weights nor data files)")
  p.add_argument("--batch-size", type=int, default=1, help="frames per network call")
  p.add_argument("--strip", default=None, help="write a JPEG strip of the first clip here")
  p.add_argument("--strip-flicker", action="store_true",
                 help="--strip: a flicker map (4x the warping difference) under each output row")
  add_slow_arguments(p)
  args = p.parse_args(argv)
  if args.method == "slow":
    return main_slow(args)
  stylizer = inference.Stylizer.from_any(args.model, batch_size=args.batch_size)
  rows = []
  if not args.throughput_only:
    data, vgg_params = bc.data_dir(args), bc.load_vgg(args)
    cfg = nets.config_from_dict(stylizer.meta["config"])
    style = image_io.load_image(data / "styles" / f"{stylizer.style_names[0]}.jpg",
                                size=cfg.style_size)
    targets = training.make_style_targets(vgg_params, jnp.asarray(style)[None], cfg.loss)
    hw = memory_hw(args.size)
    sources = [(n, lambda n=n: make_clip(n, data, hw, args.frames)) for n in args.clips]
    if args.clip:
      sources.append((args.clip, lambda: user_clip(args.clip, args.size, args.frames,
                                                   args.clip_start)))
    for name, make in sources:
      clip, flows, masks = make()
      row, plain, consistent = evaluate(name, clip, flows, masks, stylizer, args.weights,
                                        vgg_params, targets, cfg.loss, args.loss_every,
                                        args.modes)
      rows.append(row)
      print_row(row)
      if args.strip and len(rows) == 1:
        n = len(clip)
        save_strip(args.strip, clip, plain, list(consistent.values()),
                   [n // 2 - 1, n // 2, n // 2 + 1], flows if args.strip_flicker else None)
  speed = None
  if args.throughput_frames > 0:
    speed = throughput(stylizer, args.throughput_size, args.throughput_frames, args.modes)
    print(f"throughput at {speed['hw'][1]}x{speed['hw'][0]} (frames/s, flow included): "
          + ", ".join(f"{k} {speed[k + '_fps']:.2f}" for k in speed if k + "_fps" in speed))
  bc.write_result(args.out, {"model": args.model, "rows": rows, "throughput": speed}, args)
  return 0


# ------------------------------------------------------------------------------ the slow method
# ``--method slow``: ``slow.video.stylize_clip`` (Ruder et al.) against per-frame slow transfer
# (``temporal=False``: every frame from its own content) with ``nst-jax optimize``'s Gatys
# configuration at ``--size``, on the same clips and E_warp. Style loss: the Gatys objective's
# style term of each output against its own frame's targets, averaged over frames. Goal: E_warp
# <= 0.5x per-frame slow.


def add_slow_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("--method", choices=("fast", "slow"), default="fast")
  p.add_argument("--iters", type=int, default=60, help="slow: L-BFGS-B iterations per frame")
  p.add_argument("--temporal-weights", type=float, nargs="+", default=None,
                 help="slow: temporal weights to compare (default SlowVideoConfig's)")
  p.add_argument("--style", default="van_gogh_starry_night", help="slow: a ../shared style")


def slow_style_loss(vgg_params, outputs, clip, style, cfg) -> float:
  values = []
  for out, frame in zip(outputs, clip):
    x = jnp.asarray(np.asarray(out, np.float32) / 255.0)[None]
    targets = objective.make_targets(vgg_params, jnp.asarray(frame, jnp.float32)[None] / 255.0,
                                     [jnp.asarray(style)[None]], cfg.loss)
    values.append(float(objective.loss_terms(vgg_params, x, targets, cfg.loss)["style"][0]))
  return float(np.mean(values))


def run_slow(clip, style, cfg, weight: float, vgg_params, temporal: bool):
  """(uint8 outputs, seconds) of one slow run in a fresh workdir."""
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory() as work:
    outs = list(slow_video.stylize_clip(
        clip, style, config=cfg, workdir=work, temporal=temporal, vgg_params=vgg_params,
        video_config=config.SlowVideoConfig(temporal_weight=weight)))
  return outs, time.perf_counter() - t0


def evaluate_slow(name, clip, flows, masks, style, cfg, weights, vgg_params):
  """One clip's row: per-frame slow transfer and the slow method at each temporal weight
  (outputs: per-frame, then the first weight's)."""
  e_warp = lambda frames: fast_video.warping_error([f / 255.0 for f in frames], flows, masks)
  row = {"clip": name, "frames": len(clip), "hw": list(clip[0].shape[:2]), "flow": flow_kind(name),
         "input_e_warp": e_warp(clip), "consistent": {}}
  outs = {}
  for key, temporal, weight in [("per_frame", False, weights[0])] + [(w, True, w) for w in weights]:
    frames, seconds = run_slow(clip, style, cfg, weight, vgg_params, temporal)
    outs.setdefault(key, frames)
    result = {"e_warp": e_warp(frames), "seconds": seconds,
              "style": slow_style_loss(vgg_params, frames, clip, style, cfg)}
    if key == "per_frame":
      row["per_frame"] = result
    else:
      result.update(e_warp_ratio=result["e_warp"] / row["per_frame"]["e_warp"],
                    style_ratio=result["style"] / row["per_frame"]["style"])
      row["consistent"][f"{weight:g}"] = result
  return row, outs["per_frame"], outs[weights[0]]


def main_slow(args) -> int:
  data = bc.data_dir(args)
  vgg_params = bc.load_vgg(args)
  cfg = config.override(config.gatys(), {"size": args.size, "optim.num_iters": args.iters})
  weights = args.temporal_weights or [config.SlowVideoConfig.temporal_weight]
  style = image_io.load_image(data / "styles" / f"{args.style}.jpg", size=args.size)
  hw = memory_hw(args.size)
  sources = [(n, lambda n=n: make_clip(n, data, hw, args.frames)) for n in args.clips]
  if args.clip:
    sources.append((args.clip, lambda: user_clip(args.clip, args.size, args.frames,
                                                   args.clip_start)))
  rows = []
  for name, make in sources:
    clip, flows, masks = make()
    row, plain, consistent = evaluate_slow(name, clip, flows, masks, style, cfg, weights,
                                           vgg_params)
    rows.append(row)
    print(f"{name} ({FLOWS[row['flow']]})", flush=True)
    print(f"{'':<8} input E_warp {row['input_e_warp']:.5f}; per-frame slow E_warp "
          f"{row['per_frame']['e_warp']:.5f} style {row['per_frame']['style']:.4g}", flush=True)
    for weight, r in row["consistent"].items():
      print(f"{'':<8} slow method w={weight:<6} E_warp {r['e_warp']:.5f} "
            f"(x{r['e_warp_ratio']:.3f}) style {r['style']:.4g} (x{r['style_ratio']:.3f})",
            flush=True)
    if args.strip and len(rows) == 1:
      n = len(clip)
      save_strip(args.strip, clip, [f / 255.0 for f in plain], [f / 255.0 for f in consistent],
                 [n // 2 - 1, n // 2, n // 2 + 1], flows if args.strip_flicker else None)
  bc.write_result(args.out, {"method": "slow", "iters": args.iters, "size": args.size,
                             "style": args.style, "rows": rows}, args)
  return 0


if __name__ == "__main__":
  bc.run_main(main)
