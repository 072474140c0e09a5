"""Tests for nst_jax.core.model_file (the one model file format) and core.digest: round trips in
float16 and float32, what the header carries, reproducible bytes, the earlier layouts, and
one-line errors for corrupt, truncated and foreign files. numpy only: no network is built."""

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest

from nst_jax.core import digest, model_file
from nst_jax.core.errors import UserError


def _variables(seed=0):
  rng = np.random.default_rng(seed)
  return {"params": {"conv1": {"kernel": rng.normal(size=(3, 3, 3, 4)).astype(np.float32),
                               "bias": rng.normal(size=(4,)).astype(np.float32)},
                     "norm": {"scale": rng.normal(size=(2, 4)).astype(np.float32)}},
          "batch_stats": {"bn": {"mean": rng.normal(size=(4,)).astype(np.float32)}}}


def _save(path, dtype="float16", **changes):
  kwargs = dict(kind="arbitrary", source="magenta", licence="Apache-2.0",
                how="converted from a test", meta={"styles": [{"name": "a"}], "step": 7},
                dtype=dtype)
  kwargs.update(changes)
  return model_file.save(path, _variables(), {"net": {"width": 0.5}}, **kwargs)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_keeps_values_kind_config_provenance_and_licence(tmp_path, dtype):
  path = tmp_path / "m.npz"
  info = _save(path, dtype)
  assert info == {"file": "m.npz", "bytes": path.stat().st_size,
                  "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "dtype": dtype}
  with np.load(path) as data:
    stored = {k: data[k].dtype for k in data.files if k != model_file.HEADER_KEY}
  assert set(stored.values()) == {np.dtype(dtype)} and "params/conv1/kernel" in stored
  model = model_file.load(path, kind="arbitrary")
  assert (model.kind, model.config, model.meta, model.licence, model.dtype, model.format) == (
      "arbitrary", {"net": {"width": 0.5}}, {"styles": [{"name": "a"}], "step": 7},
      "Apache-2.0", dtype, model_file.FORMAT)
  assert model.provenance == {"source": "magenta", "how": "converted from a test"}
  want, got = model_file.flatten(_variables()), model_file.flatten(model.variables)
  assert sorted(want) == sorted(got)
  for key, value in want.items():
    assert got[key].dtype == np.float32
    np.testing.assert_array_equal(got[key], value.astype(dtype).astype(np.float32))
  assert model_file.read_header(path)["provenance"]["source"] == "magenta"


def test_the_same_weights_give_the_same_bytes(tmp_path):
  a, b = _save(tmp_path / "a.npz"), _save(tmp_path / "b.npz")
  assert a["sha256"] == b["sha256"]
  assert _save(tmp_path / "c.npz", licence="MIT")["sha256"] != a["sha256"]


def test_another_kind_and_bad_arguments_are_refused(tmp_path):
  _save(tmp_path / "m.npz")
  with pytest.raises(UserError, match="'arbitrary' model, not 'sr'"):
    model_file.load(tmp_path / "m.npz", kind="sr")
  for changes in ({"dtype": "int8"}, {"kind": ""}):
    with pytest.raises(UserError):
      _save(tmp_path / "bad.npz", **changes)
  with pytest.raises(UserError, match="params"):
    model_file.save(tmp_path / "bad.npz", {"batch_stats": {}}, {}, kind="sr", source="s",
                    licence="l")
  assert not (tmp_path / "bad.npz").exists()


def _foreign_files(tmp_path, raw):
  """name -> bytes of files that are not readable model files."""
  flipped = bytearray(raw)
  flipped[len(raw) // 3] ^= 0xFF  # inside a compressed member: CRC or zlib error
  buf = io.BytesIO()
  np.savez(buf, w=np.zeros(3))
  other = io.BytesIO()
  np.savez(other, __model__=np.frombuffer(json.dumps({"format": "x/9"}).encode(), np.uint8))
  objects = io.BytesIO()
  np.savez(objects, __model__=np.array([{"a": 1}], dtype=object))
  return {"trunc.npz": raw[:len(raw) // 2], "flipped.npz": bytes(flipped),
          "foreign.npz": buf.getvalue(), "format.npz": other.getvalue(),
          "pickle.npz": objects.getvalue(), "text.npz": b"PK\x03\x04 not really a zip",
          "empty.npz": b""}


def test_corrupt_truncated_foreign_and_missing_files_are_one_line_errors(tmp_path):
  _save(tmp_path / "good.npz")
  for name, data in _foreign_files(tmp_path, (tmp_path / "good.npz").read_bytes()).items():
    (tmp_path / name).write_bytes(data)
  for name in ("trunc.npz", "flipped.npz", "foreign.npz", "format.npz", "pickle.npz",
               "text.npz", "empty.npz", "missing.npz"):
    with pytest.raises(UserError) as e:
      model_file.load(tmp_path / name)
    assert len(str(e.value).splitlines()) == 1 and name in str(e.value), name


def _write_zoo1(path, variables):
  """A file as ``core.zoo.export_params`` wrote it before this format."""
  arrays = {k: v.astype(np.float16) for k, v in model_file.flatten(variables["params"]).items()}
  cfg = {"format": "nst_jax.zoo/1", "config": {"net": {}}, "styles": [{"name": "s"}], "step": 5}
  arrays["__config__"] = np.frombuffer(json.dumps(cfg).encode(), np.uint8)
  np.savez_compressed(path, **arrays)


def _write_sr0(path, variables):
  """A file as ``sr.export.export_npz`` wrote it before this format."""
  arrays = {"variables/" + k: v.astype(np.float16)
            for k, v in model_file.flatten(variables).items()}
  np.savez_compressed(path, kind=np.array("sr"), config=np.array('{"scale": 4}'), **arrays)


def test_the_earlier_layouts_are_still_read(tmp_path):
  variables = _variables()
  _write_zoo1(tmp_path / "zoo1.npz", variables)
  old = model_file.load(tmp_path / "zoo1.npz", kind="style")
  assert (old.format, old.config, old.meta) == (
      model_file.LEGACY_ZOO_FORMAT, {"net": {}}, {"styles": [{"name": "s"}], "step": 5})
  np.testing.assert_array_equal(old.variables["params"]["conv1"]["kernel"],
                                variables["params"]["conv1"]["kernel"].astype(np.float16))
  _write_sr0(tmp_path / "sr0.npz", variables)
  old = model_file.load(tmp_path / "sr0.npz", kind="sr")
  assert (old.format, old.config, sorted(old.variables)) == (
      model_file.LEGACY_SR_FORMAT, {"scale": 4}, ["batch_stats", "params"])
  assert model_file.read_header(tmp_path / "sr0.npz")["kind"] == "sr"


def test_file_digest(tmp_path):
  (tmp_path / "a").write_bytes(b"abc")
  assert digest.file_digest(tmp_path / "a") == (
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
  assert digest.file_digest(tmp_path / "a", "md5") == "900150983cd24fb0d6963f7d28e17f72"
  with pytest.raises(UserError, match="cannot read"):
    digest.file_digest(tmp_path / "nope")


def test_members_are_sorted_with_a_fixed_timestamp(tmp_path):
  _save(tmp_path / "m.npz")
  with zipfile.ZipFile(tmp_path / "m.npz") as zf:
    names = zf.namelist()
    assert names == sorted(names) and {i.date_time for i in zf.infolist()} == {
        (1980, 1, 1, 0, 0, 0)}
