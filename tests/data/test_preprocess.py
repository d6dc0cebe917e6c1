"""Preprocessing of cases (resampling, normalisation, cropping) and the disk cache, against NumPy by hand."""

import functools
import os
import tracemalloc

import numpy as np
import pytest

from jaxseg import data
from jaxseg.data import normalization, pipeline, preprocess
from jaxseg.data.cases import Case, CaseRef
from jaxseg.data.patches import PatchSampler
from jaxseg.errors import ConfigError, DataError


def test_linear_resampling_keeps_the_centre_and_interpolates_a_ramp():
  # 5 voxels every 2 mm along z (centres 0..8 mm), value 10 per voxel = 5 per mm
  z = np.arange(5, dtype=np.float32)
  image = np.broadcast_to((10 * z)[:, None, None, None], (5, 3, 4, 1)).copy()
  out = preprocess.resample(image, (2.0, 1.0, 1.0), (1.0, 1.0, 1.0))
  assert out.shape == (10, 3, 4, 1) and out.dtype == np.float32
  # 10 voxels every 1 mm sharing the centre (4 mm): -0.5, 0.5, ..., 8.5 mm; beyond the
  # outer centres the nearest voxel
  mm = np.arange(10) - 0.5
  want = np.clip(5 * mm, 0, 40)
  np.testing.assert_allclose(out[:, 1, 2, 0], want, atol=1e-4)
  # and back to the original grid: the ramp again inside; at the ends the clamped outer
  # samples (0 at -0.5 mm, 40 at 8.5 mm) average with their neighbours
  back = preprocess.resample(out, (1.0, 1.0, 1.0), (2.0, 1.0, 1.0), shape=(5, 3, 4))
  np.testing.assert_allclose(back[:, 0, 0, 0], [1.25, 10, 20, 30, 38.75], atol=1e-4)


def test_label_resampling_is_nearest_and_sizes_round():
  label = np.zeros((4, 6, 6), np.int32)
  label[1:3, 2:5, 1:4] = 2
  out = preprocess.resample(label, (2.5, 1.1, 1.1), (1.25, 2.2, 2.2), labels=True)
  assert out.shape == (8, 3, 3) and out.dtype == np.int32
  assert set(np.unique(out)) == {0, 2}
  # new voxel centres (mm, from the first old centre): z = -0.625 + 1.25 k, y/x = 0.275... map to
  # old voxels round(c / spacing); nearest neighbour by hand
  zc = (4 - 1) * 2.5 / 2 - (8 - 1) * 1.25 / 2 + 1.25 * np.arange(8)
  yc = (6 - 1) * 1.1 / 2 - (3 - 1) * 2.2 / 2 + 2.2 * np.arange(3)
  iz = np.clip(np.floor(zc / 2.5 + 0.5), 0, 3).astype(int)
  iy = np.clip(np.floor(yc / 1.1 + 0.5), 0, 5).astype(int)
  np.testing.assert_array_equal(out, label[np.ix_(iz, iy, iy)])


def _case(name="c", shape=(6, 10, 12), seed=0, spacing=(2.0, 1.0, 1.0)):
  rng = np.random.default_rng(seed)
  image = np.zeros(shape + (1,), np.float32)
  label = np.zeros(shape, np.int32)
  image[1:5, 2:9, 3:10, 0] = rng.uniform(50, 150, size=(4, 7, 7))
  label[2:4, 4:7, 5:8] = 1
  return Case(name, image, label, spacing)


def test_preprocess_normalises_the_whole_case_then_crops_to_the_body():
  case = _case()
  prep = preprocess.Preprocessing(normalization.Normalization("zscore-volume"))
  done, info = preprocess.preprocess(case, prep)
  assert info["box"] == [[1, 5], [2, 9], [3, 10]] and done.label.shape == (4, 7, 7)
  x = case.image.astype(np.float64)
  want = ((x - x.mean()) / x.std())[1:5, 2:9, 3:10]   # statistics of the whole case, air included
  np.testing.assert_allclose(done.image, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(done.label, case.label[1:5, 2:9, 3:10])
  # a label outside the nonzero image widens the box: nothing labelled is cut
  case2 = case.replace(label=case.label.copy())
  case2.label[0, 0, 0] = 1
  assert preprocess.preprocess(case2, prep)[1]["box"] == [[0, 5], [0, 9], [0, 10]]
  # with a target spacing the case is resampled first
  prep = preprocess.Preprocessing(normalization.Normalization("none"), spacing=(1.0, 1.0, 1.0), crop=False)
  done, info = preprocess.preprocess(case, prep)
  assert done.label.shape == (12, 10, 12) and done.spacing == (1.0, 1.0, 1.0)
  assert info["resampled_shape"] == [12, 10, 12] and info["original_shape"] == [6, 10, 12]


def test_bad_spacing_and_patch_flags():
  assert preprocess.parse_spacing("2.5, 1.1,1.1") == (2.5, 1.1, 1.1)
  for bad in ("1,2,3,4", "a,b,c", "0,1,1", "1"):
    with pytest.raises(ConfigError, match="--spacing"):
      preprocess.parse_spacing(bad)


def test_target_spacing_of_two_values_resamples_a_volume_in_plane_only():
  prep = preprocess.Preprocessing(normalization.Normalization("none"), spacing=(1.0, 0.5))
  assert prep.target((2.5, 1.1, 1.1)) == (2.5, 1.0, 0.5)  # slices keep their 2.5 mm
  assert prep.target((1.1, 1.1)) == (1.0, 0.5)
  assert prep.target((3.0, 1.0, 0.5)) is None  # already there: no resampling
  three = preprocess.Preprocessing(normalization.Normalization("none"), spacing=(2.0, 1.0, 0.5))
  assert three.target((1.1, 1.1)) == (1.0, 0.5)  # a 2-D case takes the last two
  assert three.target((2.5, 1.1, 1.1)) == (2.0, 1.0, 0.5)


def test_train_config_parses_patch_and_spacing_strings_and_refuses_bad_ones():
  from jaxseg.train import TrainConfig
  config = TrainConfig(model="unet3d_small", patch_size="16,48,48", spacing="2.5,1.1,1.1").resolved()
  assert config.patch_size == (16, 48, 48) and config.spacing == (2.5, 1.1, 1.1)
  with pytest.raises(ConfigError, match="--patch-size"):
    TrainConfig(model="unet3d_small", patch_size="16,x,48").validate()


def test_patch_training_refuses_a_valid_padding_model_before_any_step(tmp_path):
  from jaxseg.train import TrainConfig, inputs
  config = TrainConfig(model="unet", data="synthetic:8,4", patch_size=(64, 64)).resolved()
  with pytest.raises(ConfigError, match="unpadded"):
    inputs.prepare(config, str(tmp_path))


def _refs(cases):
  return [CaseRef.of(c) for c in cases]


class _Counting:
  """A picklable reader that counts its reads in a file (to see whether a cache was rebuilt)."""

  def __init__(self, case, path):
    self.case, self.path = case, path

  def __call__(self):
    with open(self.path, "a") as f:
      f.write("x")
    return self.case


def test_cache_holds_the_preprocessed_cases_and_is_reused_by_fingerprint(tmp_path):
  cases = [_case(f"c{i}", shape=(5 + i, 9, 11), seed=i) for i in range(3)]
  counter = tmp_path / "reads"
  refs = [CaseRef(c.name, c.name, _Counting(c, counter), f"test:{c.name}") for c in cases]
  prep = preprocess.Preprocessing(normalization.Normalization("zscore-foreground"))
  cache = preprocess.CaseCache.open_or_build(refs, prep, str(tmp_path / "cache"))
  assert len(cache) == 3 and counter.read_text() == "xxx"
  for i, c in enumerate(cases):
    done, _ = preprocess.preprocess(c, prep)
    image, label = cache.read(i)
    np.testing.assert_array_equal(image, done.image)
    np.testing.assert_array_equal(label, done.label)
    assert cache.shape(i) == done.label.shape and cache.name(i) == c.name
    fg = cache.foreground(i)
    assert fg.shape == (int((done.label > 0).sum()), 4)
    assert np.all(done.label[tuple(fg[:, 1:].T)] == fg[:, 0])
  # a region partly outside the case: padded with the pad value and label 0
  image, label = cache.read(1)
  got_img, got_lab = cache.read_region(1, (-2, 3, 5), (4, 8, 8), pad_value=-7.0)
  want_img = np.full((4, 8, 8, 1), -7.0, np.float32)
  want_lab = np.zeros((4, 8, 8), np.int32)
  d, h, w = label.shape
  want_img[2:, :max(0, min(8, h - 3)), :max(0, min(8, w - 5))] = image[:2, 3:11, 5:13]
  want_lab[2:, :max(0, min(8, h - 3)), :max(0, min(8, w - 5))] = label[:2, 3:11, 5:13]
  np.testing.assert_array_equal(got_img, want_img)
  np.testing.assert_array_equal(got_lab, want_lab)
  # same sources and preprocessing: reused without reading; another preprocessing: rebuilt
  preprocess.CaseCache.open_or_build(refs, prep, str(tmp_path / "cache"))
  assert counter.read_text() == "xxx"
  other = preprocess.Preprocessing(normalization.Normalization("none"))
  preprocess.CaseCache.open_or_build(refs, other, str(tmp_path / "cache"))
  assert counter.read_text() == "xxxxxx"
  # a build cut short (no index.json) is not a cache
  os.remove(tmp_path / "cache" / "index.json")
  assert preprocess.CaseCache.open(str(tmp_path / "cache")) is None


def test_ct_statistics_streamed_equal_the_in_memory_fit_when_nothing_is_subsampled():
  cases = [_case(f"c{i}", seed=i) for i in range(4)]
  full = normalization.fit("ct", [c.image for c in cases], [c.label for c in cases])
  streamed = normalization.fit_streaming("ct", iter(cases), count=len(cases))
  assert streamed == full
  # with a budget each case gives at most max_voxels // count foreground voxels
  few = normalization.fit_streaming("ct", iter(cases), count=len(cases), max_voxels=40)
  fg = np.concatenate([c.image[c.label > 0] for c in cases])
  assert few.mean[0] != full.mean[0] and fg.min() <= few.clip_low[0] <= few.clip_high[0] <= fg.max()


def _synthetic_case(index, shape):
  rng = np.random.default_rng(index)
  image = rng.normal(100, 20, size=shape + (1,)).astype(np.float32)
  label = (rng.random(shape) < 0.05).astype(np.int32)
  return Case(f"v{index:03d}", image, label, (2.0, 1.0, 1.0))


def _peaks(tmp_path, n, shape):
  """Peak bytes NumPy and Python allocate (tracemalloc) to build the cache of n cases, then
  to run one epoch of augmented patches over it through the Grain pipeline."""
  import grain  # noqa: F401 (imported before tracing: a module's first import is not data)
  refs = [CaseRef(f"v{i:03d}", f"v{i:03d}", functools.partial(_synthetic_case, i, shape), f"t:{i}")
          for i in range(n)]
  prep = preprocess.Preprocessing(normalization.Normalization("zscore-volume"), crop=False)
  tracemalloc.start()
  try:
    cache = preprocess.CaseCache.open_or_build(refs, prep, str(tmp_path / f"cache{n}"))
    _, build_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    batches = pipeline.training_patches(cache, PatchSampler((8, 32, 32)), batch_size=2, steps_per_epoch=n // 2,
                                        epochs=1, seed=0, augment="default")
    with pipeline.BatchIterator(batches) as it:
      seen = sum(len(images) for images, _ in it.take(n // 2))
    _, epoch_peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert seen == n and len(cache) == n
  return build_peak, epoch_peak


def test_memory_holds_the_cases_in_flight_not_the_data_set(tmp_path):
  """Four times the cases cost no more memory: building the cache reads one case at a
  time, and an epoch reads only its patches from disk (tracemalloc counts NumPy's buffers)."""
  shape = (16, 64, 64)
  case_bytes = int(np.prod(shape)) * (4 + 4)   # float32 image + int32 label
  build10, epoch10 = _peaks(tmp_path, 10, shape)
  build40, epoch40 = _peaks(tmp_path, 40, shape)
  data_set = 40 * case_bytes
  assert build40 < 1.2 * build10 + 64_000 and build40 < 6 * case_bytes < data_set / 6, (build10, build40)
  # An epoch holds the batches in flight (Grain's read-ahead, the prefetch buffer, their augmentation
  # temporaries): how many are in flight at the peak depends on timing, not on the data set. A
  # pipeline that held the data set would need 4x for 40 cases what it needs for 10.
  assert epoch40 < 1.5 * epoch10 + 256_000 and epoch40 < data_set / 8, (epoch10, epoch40, data_set)


def test_case_refs_of_the_specs_and_the_3d_default_data(tmp_path):
  train, val = data.case_refs("synthetic3d:3,2,32", seed=1)
  assert [r.name for r in train] == [f"synthetic3d-train-{i:04d}" for i in range(3)] and len(val) == 2
  case = train[1].read()
  assert case.image.shape == (16, 32, 32, 1) and case.spacing == (8.0, 10.0, 10.0)
  images, labels, _ = data.synthetic3d.generate(2, size=32, seed=1)
  np.testing.assert_array_equal(case.image[..., 0], images[1])
  np.testing.assert_array_equal(case.label, labels[1])
  assert data.spec_dims("synthetic3d") == 3 and data.spec_dims("synthetic:2,1,32") == 2
  assert data.spec_dims("folder:/x") is None
  assert data.default_normalization("synthetic3d") == "zscore-volume"
  # a 2-D model cuts the phantom's volumes into slices
  train_ds, val_ds = data.train_val("synthetic3d:3,2,32")
  assert train_ds.images.shape == (48, 32, 32, 1) and len(val_ds.volumes) == 2
  with pytest.raises(DataError, match="synthetic3d"):
    data.parse_spec("synthetic3d:1,2,3,4")
