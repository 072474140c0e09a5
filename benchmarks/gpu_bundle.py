"""Packs what `benchmarks/gpu_suite.sh` reads into `.device_bundle/`, for a GPU machine that has
neither `../shared` nor a package registry.

Usage::

  python3 benchmarks/gpu_bundle.py                  # writes .device_bundle/ (~34 MB, ignored)
  python3 benchmarks/gpu_bundle.py --check          # says whether the bundle is complete
  python3 benchmarks/gpu_bundle.py --out /tmp/b --no-wheels   # for this machine (the tests)

The device tool sends the repository and the paths named in its ``carry`` (64 MiB in all), and
not the ``../shared`` beside it; the VGG19 file alone is 80 MB. The bundle holds:

- ``cache/vgg19_conv.npz`` and ``cache/vgg16_conv.npz``: the conv weights as float16 (the
  loaders cast to float32) with the layers no benchmark reads (VGG19 conv5_2..conv5_4; VGG16
  after conv2_2, Johnson's SR loss layer relu2_2) set to zero, so compressed they cost nothing.
  Timings are those of the full float32 weights (same shapes, same programs); loss *values* differ
  from the float32 weights' in the fourth digit, so the bundle is for speed, not for results.
- ``data/``: the images the suite opens (Gatys' content and style, photo pair 1 with its masks),
  and what `benchmarks/train_zoo_gpu.sh` reads: the zoo's 8 styles, its training set
  (``train/coco2017_256``, 256 photos; train_bench decodes 3 batches of 64 of it) and the
  contact sheet's 3 photos.
- ``wheels/``: pure-Python packages that the GPU image lacks (jaxopt, tensorboardX).
- ``MANIFEST.json``: sources, sha256 of each source file, and what was zeroed.

`benchmarks/gpu_device.sh` is the command to run there.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from nst_jax.core import digest, paths, vgg16_weights

REPO = Path(__file__).resolve().parent.parent

BUNDLE = REPO / ".device_bundle"
# Layers no GPU benchmark reads: Gatys, thesis and photoreal stop at relu5_1, Johnson's SR at
# relu2_2.
UNUSED = {"vgg19": ("conv5_2", "conv5_3", "conv5_4"),
          "vgg16": ("conv3_1", "conv3_2", "conv3_3", "conv4_1", "conv4_2", "conv4_3", "conv5_1",
                    "conv5_2", "conv5_3")}
ZOO_STYLES = ("van_gogh_starry_night", "hokusai_great_wave", "munch_the_scream", "picabia_udnie",
              "kandinsky_composition_vii", "picabia_edtaonisl", "turner_shipwreck_of_the_minotaur",
              "van_gogh_wheat_field_with_cypresses")
FILES = ("content/classic_st/tubingen.jpg", "content/classic_st/golden_gate.jpg",
         "content/kodak/kodim23.jpg", *(f"styles/{s}.jpg" for s in ZOO_STYLES),
         "photo/input/in1.png", "photo/style/tar1.png", "photo/segmentation/in1.png",
         "photo/segmentation/tar1.png")
# train_zoo_gpu.sh's training set (256 photos, 9 MB); train_bench decodes 3 batches of 64 of it.
TRAIN_FOLDER = "train/coco2017_256"
WHEELS = ("jaxopt", "tensorboardX")
LIMIT_MB = 48  # the bundle's share of the device tool's 64 MiB (the repository takes ~6)


def pack_weights(src: Path, dst: Path, unused: tuple[str, ...]) -> dict:
  """float16 copy of ``src`` with the ``unused`` layers zeroed; string entries kept as they are."""
  with np.load(src, allow_pickle=False) as d:
    out = {}
    for k in d.files:
      a = d[k]
      if a.dtype.kind == "f":
        a = np.zeros_like(a, np.float16) if k.split("/")[0] in unused else a.astype(np.float16)
      out[k] = a
  dst.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(dst, **out)
  return {"source": str(src), "source_sha256": digest.file_digest(src), "dtype": "float16",
          "zeroed": list(unused), "bytes": dst.stat().st_size}


def copy_data(data: Path, dst: Path) -> list[str]:
  copied = []
  for rel in FILES:
    (dst / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(data / rel, dst / rel)
    copied.append(rel)
  shutil.copytree(data / TRAIN_FOLDER, dst / TRAIN_FOLDER)
  return copied + [f"{TRAIN_FOLDER}/ ({sum(1 for _ in (dst / TRAIN_FOLDER).iterdir())} files)"]


def download_wheels(dst: Path) -> list[str]:
  dst.mkdir(parents=True, exist_ok=True)
  versions = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
  subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                  "-d", str(dst), *versions], check=True)
  return sorted(p.name for p in dst.glob("*.whl"))


def size_mb(root: Path) -> float:
  return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


def check(root: Path) -> list[str]:
  """What the bundle lacks (empty when complete)."""
  want = [root / "cache" / "vgg19_conv.npz", root / "cache" / "vgg16_conv.npz",
          root / "MANIFEST.json", *(root / "data" / rel for rel in FILES)]
  missing = [str(p.relative_to(root)) for p in want if not p.is_file()]
  if missing:
    return missing
  wheels = json.loads((root / "MANIFEST.json").read_text())["wheels"]
  if wheels is not None and not list((root / "wheels").glob("jaxopt-*.whl")):
    missing.append("wheels/jaxopt-*.whl")
  return missing


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", type=Path, default=BUNDLE)
  p.add_argument("--vgg-weights", help="VGG19 conv .npz (default: the usual search path)")
  p.add_argument("--vgg16-weights", help="VGG16 conv .npz (default: the nst_jax cache)")
  p.add_argument("--data-dir", help="the shared data folder (default: the usual search path)")
  p.add_argument("--check", action="store_true", help="only say whether the bundle is complete")
  p.add_argument("--no-wheels", action="store_true",
                 help="no wheels (a bundle for this machine, which has the packages: the tests)")
  args = p.parse_args(argv)
  if not args.check:
    if args.out.exists():
      shutil.rmtree(args.out)
    manifest = {
        "vgg19": pack_weights(paths.resolve_vgg_weights(args.vgg_weights),
                              args.out / "cache" / "vgg19_conv.npz", UNUSED["vgg19"]),
        "vgg16": pack_weights(vgg16_weights.resolve_vgg16(args.vgg16_weights),
                              args.out / "cache" / "vgg16_conv.npz", UNUSED["vgg16"]),
        "data": copy_data(paths.data_dir(args.data_dir), args.out / "data"),
        "wheels": None if args.no_wheels else download_wheels(args.out / "wheels"),
    }
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
  missing = check(args.out)
  mb = size_mb(args.out) if args.out.exists() else 0.0
  if missing:
    print(f"error: {args.out} is incomplete, missing {', '.join(missing)}; run python3 "
          "benchmarks/gpu_bundle.py", file=sys.stderr)
    return 2
  if mb > LIMIT_MB:
    print(f"error: {args.out} is {mb:.1f} MB, over the {LIMIT_MB} MB it may take", file=sys.stderr)
    return 2
  print(f"{args.out}: complete, {mb:.1f} MB")
  return 0


if __name__ == "__main__":
  sys.exit(main())
