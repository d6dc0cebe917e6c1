"""jaxseg.inference: sliding windows against whole-input NumPy models."""

import itertools

import numpy as np
import pytest
from scipy import ndimage

from jaxseg.errors import ConfigError, DataError
from jaxseg.inference import gaussian_importance, sliding_window, window_starts


def pointwise(x):
  """A model with no context: logits (x, x^2 - 1, sin 3x) of each pixel alone."""
  return np.concatenate([x, x ** 2 - 1, np.sin(3 * x)], axis=-1)


def conv_model(kernel):
  """A translation-equivariant model: zero-padded correlation with `kernel`, then a
  nonlinearity, two logits. Its receptive field reaches kernel.shape // 2 away."""
  def fn(x):
    out = []
    for img in np.asarray(x, np.float64):
      h = ndimage.correlate(img[..., 0], kernel, mode="constant", cval=0.0)
      out.append(np.stack([np.tanh(h), h - 0.5 * img[..., 0]], axis=-1))
    return np.stack(out).astype(np.float32)
  return fn


def softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("size,window,overlap,starts", [
    (100, 40, 0.5, [0, 20, 40, 60]),      # step 20 exactly
    (37, 16, 0.5, [0, 7, 14, 21]),        # ceil(21 / 8) + 1 = 4 windows, step 7
    (17, 16, 0.5, [0, 1]),                # one voxel too many: two windows
    (16, 16, 0.5, [0]),
    (50, 16, 0.0, [0, 11, 23, 34]),       # no overlap asked: 4 windows of 16 still overlap a bit
    (50, 16, 0.75, [0, 4, 8, 11, 15, 19, 23, 26, 30, 34]),  # step <= 4: ceil(34 / 4) + 1 = 10, 3.78 apart
])
def test_window_starts_by_hand(size, window, overlap, starts):
  assert window_starts(size, window, overlap) == starts


def test_window_starts_rejects_small_sizes_and_bad_overlap():
  with pytest.raises(ConfigError):
    window_starts(10, 16, 0.5)
  with pytest.raises(ConfigError):
    window_starts(40, 16, 1.0)


@pytest.mark.parametrize("window", [(33,), (17, 33), (9, 17, 25)])
def test_gaussian_is_a_filtered_delta_with_sigma_an_eighth_of_the_window(window):
  # SciPy's Gaussian filter of a centred delta (odd sizes: the centre is a voxel).
  delta = np.zeros(window)
  delta[tuple(w // 2 for w in window)] = 1
  ref = ndimage.gaussian_filter(delta, [w / 8 for w in window], mode="constant", truncate=4.5)
  g = gaussian_importance(window)
  assert g.shape == window and g.dtype == np.float32 and g.max() == 1
  np.testing.assert_allclose(g, ref / ref.max(), rtol=2e-3, atol=1e-6)
  assert g.min() > 0
  for axis in range(len(window)):  # symmetric under flips
    np.testing.assert_array_equal(g, np.flip(g, axis))


@pytest.mark.parametrize("shape,window", [
    ((2, 13, 17, 1), (13, 17)),        # the window is the image
    ((2, 13, 17, 1), (16, 20)),        # the window is larger: padded with zeros, cropped back
    ((1, 5, 9, 11, 1), (5, 9, 11)),
    ((1, 5, 9, 11, 1), (8, 16, 16)),
])
def test_one_window_covering_the_input_is_whole_input_inference(shape, window):
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  kernel = np.random.default_rng(1).normal(size=(3,) * (len(shape) - 2))
  fn = conv_model(kernel)
  got = sliding_window(fn, x, window=window, output="logits")
  # zero padding of the window = the conv's own zero padding at the border
  np.testing.assert_allclose(got, fn(x), rtol=1e-5, atol=1e-5)
  probs = sliding_window(fn, x, window=window)
  np.testing.assert_allclose(probs, softmax(fn(x).astype(np.float64)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,window,overlap", [
    ((2, 37, 53, 1), (16, 24), 0.5),       # odd 2-D sizes, several windows per axis
    ((1, 7, 23, 19, 1), (4, 16, 8), 0.5),  # odd 3-D sizes
    ((1, 7, 23, 19, 1), (8, 16, 8), 0.3),  # depth smaller than the window: padded
    ((1, 40, 40, 1), (16, 16), 0.0),
])
def test_no_seams_a_context_free_model_gives_itself_everywhere(shape, window, overlap):
  rng = np.random.default_rng(2)
  for x in (np.full(shape, 0.7, np.float32), rng.normal(size=shape).astype(np.float32)):
    got = sliding_window(pointwise, x, window=window, overlap=overlap, batch_size=3,
                         output="logits")
    assert got.shape == shape[:-1] + (3,) and got.dtype == np.float32
    np.testing.assert_allclose(got, pointwise(x), rtol=1e-5, atol=1e-6)


def _near_inner_window_edges(size, window, overlap, reach):
  """Voxels within `reach` of a window edge that is not the input's border (1-D mask)."""
  bad = np.zeros(size, bool)
  for s in window_starts(size, window, overlap):
    for edge in (s, s + window):
      if 0 < edge < size:
        bad[max(edge - reach, 0):min(edge + reach, size)] = True
  return bad


@pytest.mark.parametrize("shape,window", [((1, 61, 45, 1), (24, 16)), ((1, 13, 29, 21, 1), (6, 12, 10))])
def test_translation_equivariant_model_matches_whole_input_away_from_window_edges(shape, window):
  x = np.random.default_rng(3).normal(size=shape).astype(np.float32)
  nd = len(window)
  kernel = np.random.default_rng(4).normal(size=(3,) * nd)  # reaches 1 voxel
  fn = conv_model(kernel)
  ref = fn(x)
  got = sliding_window(fn, x, window=window, overlap=0.5, batch_size=4, output="logits")
  masks = [_near_inner_window_edges(s, w, 0.5, 1) for s, w in zip(shape[1:-1], window)]
  bad = np.zeros(shape[1:-1], bool)
  for axis, m in enumerate(masks):
    bad |= m.reshape([-1 if a == axis else 1 for a in range(nd)])
  assert bad.any() and (~bad).sum() >= 300
  # Where every window sees the voxel's whole receptive field: the whole-input result.
  np.testing.assert_allclose(got[0][~bad], ref[0][~bad], rtol=1e-5, atol=1e-5)
  # Next to window edges the edge window's wrong value is weighted down by the
  # Gaussian (about exp(-7) against the window that has the voxel near its centre).
  assert np.abs(got - ref).max() < 2e-2 * np.abs(ref).max()


def test_mirroring_averages_the_flipped_predictions_and_is_a_no_op_for_a_symmetric_model():
  x = np.random.default_rng(5).normal(size=(1, 11, 14, 9, 1)).astype(np.float32)
  k1 = np.array([0.5, 1.0, 0.5])
  symmetric = conv_model(np.einsum("i,j,k->ijk", k1, k1 * 2, k1))  # flip-symmetric kernel
  plain = sliding_window(symmetric, x, window=(8, 8, 8), output="logits")
  mirrored = sliding_window(symmetric, x, window=(8, 8, 8), mirror_axes=(0, 1, 2), output="logits")
  np.testing.assert_allclose(mirrored, plain, rtol=1e-5, atol=1e-5)
  # An asymmetric model, one window: the mean over the 4 flips of axes (1, 2), by hand.
  fn = conv_model(np.random.default_rng(6).normal(size=(3, 3, 3)))
  expected = np.mean([np.flip(fn(np.flip(x, axes)), axes) if axes else fn(x)
                      for axes in [(), (2,), (3,), (2, 3)]], axis=0)
  got = sliding_window(fn, x, window=x.shape[1:4], mirror_axes=(1, 2), output="logits")
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  assert np.abs(got - fn(x)).max() > 1e-2  # the flips did change something


def test_windows_run_in_fixed_batches_and_the_batch_size_does_not_change_the_result():
  x = np.random.default_rng(7).normal(size=(2, 30, 41, 1)).astype(np.float32)
  fn = conv_model(np.random.default_rng(8).normal(size=(3, 3)))
  seen = []

  def counting(w):
    seen.append(w.shape)
    return fn(w)

  a = sliding_window(counting, x, window=(16, 16), batch_size=5, output="logits")
  starts = [window_starts(30, 16), window_starts(41, 16)]
  windows = 2 * len(starts[0]) * len(starts[1])
  assert seen == [(5, 16, 16, 1)] * -(-windows // 5)   # never more than 5 windows at once
  b = sliding_window(fn, x, window=(16, 16), batch_size=1, output="logits")
  np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_bad_arguments_are_user_errors():
  x = np.zeros((1, 8, 8, 1), np.float32)
  with pytest.raises(DataError, match="3-D window"):
    sliding_window(pointwise, x, window=(4, 4, 4))
  with pytest.raises(ConfigError, match="output"):
    sliding_window(pointwise, x, window=4, output="labels")
  with pytest.raises(ConfigError, match="mirror"):
    sliding_window(pointwise, x, window=4, mirror_axes=(2,))
  with pytest.raises(DataError, match="model gave shape"):
    sliding_window(lambda w: w[:, :2], x, window=4)
