"""Patch sampling: where patches lie, the foreground share, determinism, 2-D slices; 3-D-aware augmentation."""

import dataclasses

import numpy as np
import pytest

from jaxseg import data
from jaxseg.data import augment, patches, pipeline
from jaxseg.data.preprocess import extract_region, foreground_sample
from jaxseg.errors import ConfigError


def test_patches_stay_inside_larger_cases_and_hold_smaller_ones_whole():
  sampler = patches.PatchSampler((4, 8, 8), foreground_share=0.0)
  rng = np.random.default_rng(0)
  empty = np.zeros((0, 4), np.int32)
  starts = np.array([sampler.start((10, 12, 8), empty, rng) for _ in range(400)])
  assert starts.min(axis=0).tolist() == [0, 0, 0] and starts.max(axis=0).tolist() == [6, 4, 0]
  # smaller than the patch along z and x: the case lies inside the patch at a random offset
  starts = np.array([sampler.start((3, 20, 5), empty, rng) for _ in range(400)])
  assert starts[:, 0].min() == -1 and starts[:, 0].max() == 0
  assert starts[:, 2].min() == -3 and starts[:, 2].max() == 0
  assert starts[:, 1].min() == 0 and starts[:, 1].max() == 12


def test_a_third_of_the_patches_are_centred_on_foreground_which_they_contain():
  shape, size = (12, 40, 40), (4, 8, 8)
  label = np.zeros(shape, np.int32)
  label[10, 35, 2] = 1                  # one voxel of class 1 in a corner
  label[3:5, 5:7, 30:33] = 2            # a small block of class 2
  fg = foreground_sample(label, 0)
  assert sorted(map(tuple, fg[:, 1:].tolist())) == sorted(map(tuple, np.argwhere(label > 0).tolist()))
  sampler = patches.PatchSampler(size)
  hits, trials = {1: 0, 2: 0}, 3000
  for k in range(trials):
    rng = np.random.default_rng([1, k])
    start = sampler.start(shape, fg, rng)
    _, lab = extract_region(np.zeros(shape + (1,), np.float32), label, start, size)
    for c in (1, 2):
      hits[c] += bool((lab == c).any())
  # centred patches: 1/3, half of them on each class; a random patch holds the corner voxel
  # with probability 1/(9*33*33) and the block with a few per cent at most
  share = (hits[1] + hits[2]) / trials
  assert 0.30 < share < 0.40, hits
  assert abs(hits[1] / trials - 1 / 6) < 0.03, hits


def test_patch_pipeline_is_a_function_of_seed_epoch_case_and_resumes_exactly(tmp_path):
  from jaxseg.data.cases import Case, CaseRef
  from jaxseg.data import normalization, preprocess
  rng = np.random.default_rng(0)
  cases = []
  for i in range(5):
    shape = (6 + i, 20 + 3 * i, 17 + i)
    label = (rng.random(shape) < 0.02).astype(np.int32)
    cases.append(Case(f"c{i}", rng.normal(size=shape + (1,)).astype(np.float32), label, (2.5, 1.1, 1.1)))
  cache = preprocess.CaseCache.open_or_build([CaseRef.of(c) for c in cases],
                                             preprocess.Preprocessing(normalization.Normalization("none")),
                                             str(tmp_path / "c"))
  cfg = augment.for_volumes(augment.preset("heavy"), (2.5, 1.1, 1.1), (8, 16, 16))
  assert cfg.inplane_only and not cfg.rotate_3d
  kw = dict(batch_size=2, steps_per_epoch=5, epochs=3, seed=3, augment=cfg, patches_per_case=2)
  batches = pipeline.training_patches(cache, patches.PatchSampler((8, 16, 16)), **kw)
  with pipeline.BatchIterator(batches) as it:
    ref = list(it.take(15))
  assert ref[0][0].shape == (2, 8, 16, 16, 1) and ref[0][1].shape == (2, 8, 16, 16)
  with pipeline.BatchIterator(batches, start_batch=7, options=pipeline.PipelineOptions(workers=2)) as it:
    later = list(it.take(8))
  for (ri, rl), (li, ll) in zip(ref[7:], later):
    np.testing.assert_array_equal(ri, li)
    np.testing.assert_array_equal(rl, ll)
  # without augmentation, element j of epoch e is patch j // 5 of case j % 5 drawn from (3, e, 4, case, k)
  plain = pipeline.training_patches(cache, patches.PatchSampler((8, 16, 16)), **{**kw, "augment": "none"})
  order = data.epoch_order(10, seed=3, epoch=2)
  item = int(order[4])                          # batch 7 = epoch 2, batch 2: examples 4 and 5
  case, k = item % 5, item // 5
  start = patches.PatchSampler((8, 16, 16)).start(cache.shape(case), cache.foreground(case),
                                                  np.random.default_rng([3, 2, 4, case, k]))
  want = cache.read_region(case, start, (8, 16, 16))
  got = plain[7]
  np.testing.assert_array_equal(got["image"][0], want[0])
  np.testing.assert_array_equal(got["label"][0], want[1])


def test_slices_of_a_2d_data_set_are_cases_at_their_own_size():
  ds, _ = data.load("synthetic:3,1,32")
  ds = dataclasses.replace(ds, volumes=tuple(dataclasses.replace(v, shape=(20, 24)) for v in ds.volumes))
  cases = patches.SliceCases(ds)
  assert len(cases) == 3 and cases.shape(1) == (20, 24)
  image, label = cases.read_region(1, (-2, 20), (8, 8))
  want = np.zeros((8, 8, 1), np.float32)
  want[2:, :4] = ds.images[1, :6, 20:24]
  np.testing.assert_array_equal(image, want)
  assert patches.parse_patch_size("48, 64") == (48, 64)
  for bad in ("1,2,3,4", "a,b", "0,8"):
    with pytest.raises(ConfigError, match="--patch-size"):
      patches.parse_patch_size(bad)


def test_default_patch_is_the_median_case_rounded_up_and_capped():
  assert patches.default_patch_size([(16, 64, 64)] * 3, 8) == (16, 64, 64)
  assert patches.default_patch_size([(23, 59, 57), (21, 61, 55), (30, 70, 70)], 8) == (24, 64, 64)
  # 128x256x256 is 2^23 voxels: the largest axis shrinks by 8 at a time to at most 2^18
  patch = patches.default_patch_size([(128, 256, 256)], 8)
  assert np.prod(patch) <= 2 ** 18 and all(p % 8 == 0 for p in patch)
  assert patch == (64, 64, 64)


def test_thick_slices_are_augmented_in_plane_and_isotropic_volumes_in_3d():
  assert augment.is_anisotropic((2.5, 1.1, 1.1)) and augment.is_anisotropic((1, 1, 1), (16, 64, 64))
  assert not augment.is_anisotropic((1.5, 1.0, 1.0), (32, 64, 64))
  iso = augment.for_volumes(augment.preset("default"), (1.0, 1.0, 1.0), (32, 32, 32))
  assert iso.rotate_3d and not iso.inplane_only
  # in-plane: rotation, scaling and elastic deformation never mix slices
  label = np.zeros((5, 24, 24), np.int32)
  for z in range(5):
    label[z, 6:18, 6:18] = z % 3
  thick = augment.for_volumes(dataclasses.replace(augment.PRESETS["heavy"], p_rotate=1, p_scale=1, p_elastic=1,
                                                  p_mirror=0), (4.0, 1.0, 1.0))
  for seed in range(3):
    _, out = augment.augment_example(label[..., None].astype(np.float32), label, np.random.default_rng(seed), thick)
    for z in range(5):
      assert set(np.unique(out[z])) <= {0, z % 3}
  # 3-D rotation moves voxels between slices
  spun = dataclasses.replace(thick, rotate_3d=True, inplane_only=False, p_scale=0, p_elastic=0)
  moved = [augment.augment_example(label[..., None].astype(np.float32), label, np.random.default_rng(s), spun)[1]
           for s in range(3)]
  assert any(not set(np.unique(m[z])) <= {0, z % 3} for m in moved for z in range(5))
