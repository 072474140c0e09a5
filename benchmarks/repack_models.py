"""Re-pack the shipped models into the one model file format, verified.

Synopsis::

  python3 benchmarks/repack_models.py              # checkpoints/*.npz in place, MANIFEST.json too
  python3 benchmarks/repack_models.py --dry-run    # only report what would change

For each entry of the shipped manifest the file is read in whatever layout it has
(``core.model_file.load``), written again in the current layout (float16, with its kind,
config, provenance and licence), read back and compared with the old file's stored arrays: every
array must be bit-identical (float16 -> float32 -> float16 is exact), else nothing is written.
The entry's sha256, bytes, dtype, source and licence are then updated. The old and new sha256
go to ``benchmarks/results/repack_models.json``. Running it again changes nothing (the writer is
deterministic).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

import bench_common as bc
from nst_jax.core import digest, model_file, zoo
from nst_jax.core.errors import UserError


def how_made(entry: dict, old: model_file.Model) -> str:
  """The provenance line of a shipped model: its own if it has one, else from its entry."""
  if old.provenance.get("how"):
    return old.provenance["how"]
  if entry.get("training_command"):
    return f"{entry['training_command']}; then `nst-jax sr export` (checkpoints/README.md)"
  return (f"`nst-jax train` ({entry.get('preset', '?')} preset, {entry.get('steps', '?')} steps "
          f"of batch {entry.get('batch_size', '?')} at {entry.get('train_size', '?')} px), "
          f"{entry.get('train_hours', '?')} h on {entry.get('device', '?')}; exported by "
          "benchmarks/export_zoo.py (checkpoints/README.md has the commands)")


def stored_arrays(path: Path) -> dict[str, np.ndarray]:
  """The raw stored arrays of a model file under their variable paths (any layout)."""
  with np.load(path, allow_pickle=False) as data:
    files = {k: data[k] for k in data.files}
  if model_file.HEADER_KEY in files:
    return {k: v for k, v in files.items() if k != model_file.HEADER_KEY}
  if model_file.LEGACY_ZOO_KEY in files:
    return {"params/" + k: v for k, v in files.items() if k != model_file.LEGACY_ZOO_KEY}
  prefix = model_file.LEGACY_SR_PREFIX
  return {k[len(prefix):]: v for k, v in files.items() if k.startswith(prefix)}


def repack(folder: Path, entry: dict, *, dry_run: bool) -> dict:
  """Re-packs one entry's file; returns its row (old and new sha256 and bytes, format)."""
  path = folder / entry["file"]
  zoo.verify(path, entry["sha256"])
  old = model_file.load(path)
  before = stored_arrays(path)
  with tempfile.TemporaryDirectory() as tmp:
    new_path = Path(tmp) / path.name
    info = model_file.save(new_path, old.variables, old.config, kind=old.kind, meta=old.meta,
                           source=old.provenance.get("source") or zoo.OWN_SOURCE,
                           licence=old.licence or zoo.OWN_LICENCE, how=how_made(entry, old))
    after = stored_arrays(new_path)
    if sorted(before) != sorted(after) or any(
        before[k].dtype != after[k].dtype or not np.array_equal(before[k], after[k])
        for k in before):
      raise UserError(f"{path}: the re-packed arrays differ; nothing written")
    if model_file.load(new_path).config != old.config:
      raise UserError(f"{path}: the re-packed config differs; nothing written")
    if not dry_run:
      shutil.copyfile(new_path, path)
  row = {"name": entry["name"], "old_format": old.format, "old_sha256": entry["sha256"],
         "old_bytes": entry.get("bytes"), "new_sha256": info["sha256"],
         "new_bytes": info["bytes"], "arrays": len(after), "identical": True}
  if not dry_run:
    entry.update(sha256=digest.file_digest(path), bytes=path.stat().st_size,
                 **{k: v for k, v in zoo.manifest_entry(entry["name"], path).items()
                    if k in ("dtype", "source", "licence")})
  return row


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--folder", type=Path, default=zoo.shipped_dir(),
                      help="a folder of models with its MANIFEST.json (default: the shipped)")
  parser.add_argument("--dry-run", action="store_true", help="report only; write nothing")
  parser.add_argument("--out", type=Path, default=bc.RESULTS / "repack_models.json")
  args = parser.parse_args()
  entries = zoo.read_manifest(args.folder)
  rows = [repack(args.folder, e, dry_run=args.dry_run) for e in entries]
  if not args.dry_run:
    zoo.write_manifest(args.folder, entries)
  for r in rows:
    print(f"{r['name']:<14} {r['old_format']:<16} {r['old_sha256'][:12]} -> "
          f"{r['new_sha256'][:12]}  {r['old_bytes']} -> {r['new_bytes']} bytes, "
          f"{r['arrays']} arrays bit-identical")
  bc.write_result(args.out, {"rows": rows}, args)
  return 0


if __name__ == "__main__":
  bc.run_main(main)
