"""Pallas conv / conv_transpose kernels against jaxseg.reference (NumPy) and lax's gradients.

Interpret mode is slow on the CPU, so the sweep is small and deliberate:
7 conv cases + 5 conv_transpose cases (+ the lab's 31x31/16 layer forward), each checking the forward pass and
both gradients (one jit per case), across strides 1-3 and 16, SAME / VALID /
explicit (incl. negative) pads, dilation 1-2, several channel blocks and
block sizes 16/32/64.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from jaxseg import ops, reference
from kernels import backend
from kernels.conv import BlockSizes, conv_pallas, conv_reference
from kernels.conv_transpose import conv_transpose_pallas, conv_transpose_reference

TOL = dict(atol=1e-4, rtol=1e-4)
# Compiled on a GPU, Triton's float32 dot runs in TF32 (10-bit mantissa).
TOL_TF32 = dict(atol=2e-2, rtol=2e-2)
B16 = BlockSizes(block_m=16, block_n=16, block_k=16)

# name, x shape, kernel hw, Cout, kwargs, block sizes
CONV_CASES = (
    ("k3_s1_same", (1, 8, 8, 3), (3, 3), 5, dict(stride=1, padding="SAME"), B16),
    ("k3_s2_same_two_n_blocks", (2, 9, 7, 4), (3, 3), 17, dict(stride=2, padding="SAME"), B16),
    ("k3_valid_dil2_bm32", (1, 8, 8, 16), (3, 3), 16, dict(padding="VALID", dilation=2),
     BlockSizes(32, 16, 16)),
    ("k2x3_s2x1_explicit", (1, 7, 9, 2), (2, 3), 3,
     dict(stride=(2, 1), padding=((1, 2), (0, 1))), B16),
    ("k4_s3_dil1x2_two_k_blocks", (1, 10, 10, 20), (4, 4), 2,
     dict(stride=3, padding="SAME", dilation=(1, 2)), B16),
    ("k3_s2_negative_pads_default_blocks", (1, 8, 8, 2), (3, 3), 2,
     dict(stride=2, padding=((-1, 2), (2, -1))), None),
    # The stride phases hold more pixels than the output tiles ever read.
    ("k2_s3_unread_phase_tail", (1, 2, 23, 2), (2, 2), 2,
     dict(stride=3, padding=((0, 2), (0, 2))), B16),
)

# name, y shape, kernel hw, C_out, kwargs
TRANSPOSE_CASES = (
    ("k3_s2_same", (1, 4, 4, 3), (3, 3), 5, dict(stride=2, padding="SAME")),
    ("k9_s4_valid", (1, 3, 2, 2), (9, 9), 3, dict(stride=4, padding="VALID")),
    ("k3x2_s2x3_output_padding", (1, 3, 4, 2), (3, 2), 2,
     dict(stride=(2, 3), padding="SAME", output_padding=(1, 2))),
    ("k3_s2_explicit_dil2", (2, 4, 4, 2), (3, 3), 3,
     dict(stride=2, padding=((1, 2), (0, 1)), dilation=2)),
    # Large hi pads: part of the input never reaches the output.
    ("k2_s1_large_hi_pads", (1, 4, 4, 2), (2, 2), 2, dict(stride=1, padding=((0, 3), (0, 3)))),
)


def _arrays(seed, *shapes):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=s).astype(np.float32) for s in shapes]


def _lax_conv(x, w, stride=1, padding="SAME", dilation=1):
  pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
  return jax.lax.conv_general_dilated(x, w, pair(stride), padding, rhs_dilation=pair(dilation),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      precision=jax.lax.Precision.HIGHEST)


class PallasConvTest(parameterized.TestCase):
  """Compiled kernels (needs a GPU); the subclass below runs them interpreted."""
  INTERPRET = False

  def setUp(self):
    super().setUp()
    if not self.INTERPRET and jax.default_backend() != "gpu":
      self.skipTest("compiled Pallas kernels need a GPU; see PallasConvInterpretTest")
    self.tol = TOL if self.INTERPRET else TOL_TF32

  @parameterized.named_parameters(*CONV_CASES)
  def test_conv_forward_and_gradients(self, x_shape, khw, cout, kw, block_sizes):
    x, w = _arrays(len(x_shape) + cout, x_shape, khw + (x_shape[-1], cout))
    want = reference.conv(x, w, **kw)
    (ct,) = _arrays(7, want.shape)
    pallas = lambda a, b: conv_pallas(a, b, block_sizes=block_sizes, interpret=self.INTERPRET, **kw)

    @jax.jit
    def run(x, w, ct):
      y, vjp = jax.vjp(pallas, x, w)
      return y, vjp(ct)

    y, grads = run(x, w, ct)
    chex.assert_trees_all_close(np.asarray(y), want, **self.tol)
    chex.assert_trees_all_close(np.asarray(conv_reference(x, w, **kw)), want, **TOL)
    _, vjp_lax = jax.vjp(lambda a, b: _lax_conv(a, b, **kw), x, w)
    chex.assert_trees_all_close(grads, vjp_lax(ct), **self.tol)

  @parameterized.named_parameters(*TRANSPOSE_CASES)
  def test_conv_transpose_forward_and_gradients(self, y_shape, khw, cout, kw):
    y, w = _arrays(len(khw) + cout, y_shape, khw + (cout, y_shape[-1]))
    want = reference.conv_transpose(y, w, **kw)
    (ct,) = _arrays(8, want.shape)
    pallas = lambda a, b: conv_transpose_pallas(a, b, block_sizes=B16, interpret=self.INTERPRET,
                                                **kw)

    @jax.jit
    def run(y, w, ct):
      out, vjp = jax.vjp(pallas, y, w)
      return out, vjp(ct)

    out, grads = run(y, w, ct)
    chex.assert_trees_all_close(np.asarray(out), want, **self.tol)
    chex.assert_trees_all_close(np.asarray(conv_transpose_reference(y, w, **kw)), want, **TOL)
    _, vjp_lax = jax.vjp(lambda a, b: ops.conv_transpose(a, b, impl="lax", **kw), y, w)
    chex.assert_trees_all_close(grads, vjp_lax(ct), **self.tol)

  def test_lab_deconv_31x31_stride16_forward(self):
    # The lab's FCN upsampling layer, at a tiny input: 256 output phases of <= 4 taps.
    y, w = _arrays(9, (1, 2, 2, 2), (31, 31, 2, 2))
    got = conv_transpose_pallas(y, w, stride=16, padding="SAME", block_sizes=B16,
                                interpret=self.INTERPRET)
    self.assertEqual(got.shape, (1, 32, 32, 2))
    chex.assert_trees_all_close(np.asarray(got), reference.conv_transpose(y, w, stride=16),
                                **self.tol)


class PallasConvInterpretTest(PallasConvTest):
  INTERPRET = True


class ShapeErrorTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("groups", (1, 4, 4, 2), (3, 3, 1, 2), dict(groups=2), "groups=2"),
      ("three_d", (1, 4, 4, 4, 2), (3, 3, 3, 2, 2), {}, "2-D only"),
      ("channels", (1, 4, 4, 3), (3, 3, 2, 2), {}, "input channels"),
      ("padding", (1, 4, 4, 2), (3, 3, 2, 2), dict(padding="FULL"), "padding='FULL'"),
      ("block_size", (1, 4, 4, 2), (3, 3, 2, 2), dict(block_sizes=BlockSizes(block_m=8)),
       "block_m=8 must be a power of two >= 16"),
      ("empty", (1, 2, 2, 2), (3, 3, 2, 2), dict(padding="VALID"), "empty"),
  )
  def test_conv_rejects(self, x_shape, w_shape, kw, message):
    with self.assertRaisesRegex(ValueError, message):
      conv_pallas(jnp.zeros(x_shape), jnp.zeros(w_shape), **kw)

  def test_conv_transpose_rejects_inconsistent_output_padding(self):
    with self.assertRaisesRegex(ValueError, "not the input size"):
      conv_transpose_pallas(jnp.zeros((1, 3, 4, 2)), jnp.zeros((3, 2, 2, 2)), stride=(2, 3),
                            output_padding=(1, 0))

  def test_conv_transpose_rejects_3d(self):
    with self.assertRaisesRegex(ValueError, "2-D only"):
      conv_transpose_pallas(jnp.zeros((1, 2, 2, 2, 2)), jnp.zeros((2, 2, 2, 2, 2)))


def test_interpret_default_is_chosen_when_lowering():
  # interpret=None stays None (backend.pallas_call makes it a platform_dependent): run here it
  # interprets and matches the reference; lowered for CUDA the same trace holds the GPU kernel.
  assert backend.resolve_interpret(None) is None
  assert backend.resolve_interpret(False) is False and backend.resolve_interpret(1) is True
  x, w = _arrays(5, (1, 6, 6, 3), (3, 3, 3, 4))
  chex.assert_trees_all_close(np.asarray(conv_pallas(x, w)), reference.conv(x, w, padding="SAME"), **TOL)
  traced = jax.jit(lambda x, w: conv_pallas(x, w)).trace(x, w)
  cuda = traced.lower(lowering_platforms=("cuda",)).as_text()
  cpu = traced.lower(lowering_platforms=("cpu",)).as_text()
  assert sum(cuda.count(t) for t in backend.GPU_CALL_TARGETS) == 1 and "stablehlo.while" not in cuda
  assert not any(t in cpu for t in backend.GPU_CALL_TARGETS) and "stablehlo.while" in cpu


def test_ops_dispatch_conv_transpose_pallas():
  # jaxseg.ops passes its own normalised arguments (tuples, per-dim output_padding).
  y, w = _arrays(11, (1, 3, 3, 2), (4, 4, 3, 2))
  kw = dict(stride=2, padding="SAME", output_padding=1)
  got = ops.conv_transpose(y, w, impl="pallas", **kw)
  chex.assert_trees_all_close(np.asarray(got), reference.conv_transpose(y, w, **kw), **TOL)
