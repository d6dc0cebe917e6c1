"""Every kernel (forward and gradient) lowers for a CUDA GPU on this CPU-only machine.

`lower(lowering_platforms=("cuda",))` runs the Pallas -> Triton lowering; the
text must hold the Triton kernel call, as many as there are kernels, and no
XLA fallback (convolution, reduce_window, select_and_scatter). Interpret mode
would show up as a plain while loop without the call.
"""

import functools

import jax
import jax.numpy as jnp
import pytest

from kernels import backend
from kernels.conv import conv_pallas
from kernels.conv_transpose import conv_transpose_pallas
from kernels.fused_loss import fused_ce_dice
from kernels.pool import max_pool_pallas

COMPILED = dict(interpret=False)
X = jax.ShapeDtypeStruct((2, 16, 16, 4), jnp.float32)
W = jax.ShapeDtypeStruct((3, 3, 4, 8), jnp.float32)
LOGITS = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
LABELS = jax.ShapeDtypeStruct((2, 16, 16), jnp.int32)


def _grad(f, argnums=0):
  return jax.grad(lambda *a: sum(jnp.sum(o) for o in jax.tree.leaves(f(*a))), argnums=argnums)


conv = functools.partial(conv_pallas, stride=2, padding="SAME", **COMPILED)
deconv = functools.partial(conv_transpose_pallas, stride=16, padding="SAME", **COMPILED)
pool = functools.partial(max_pool_pallas, window=3, stride=2, padding="SAME", **COMPILED)
loss = functools.partial(fused_ce_dice, **COMPILED)

# name, function, abstract arguments, number of kernel calls in the lowered text
CASES = [
    ("conv", conv, (X, W), 1),
    ("conv_grad", _grad(conv, (0, 1)), (X, W), 2),          # dx (transposed) + dw kernels
    ("conv_transpose_31x31_s16", deconv,
     (jax.ShapeDtypeStruct((1, 4, 4, 8), jnp.float32),
      jax.ShapeDtypeStruct((31, 31, 2, 8), jnp.float32)), 1),
    ("conv_transpose_grad", _grad(deconv, (0, 1)),
     (jax.ShapeDtypeStruct((1, 4, 4, 8), jnp.float32),
      jax.ShapeDtypeStruct((31, 31, 2, 8), jnp.float32)), 2),
    ("max_pool", lambda x: pool(x), (X,), 1),
    ("max_pool_grad", _grad(lambda x: pool(x)), (X,), 2),    # forward (argmax) + gather
    ("fused_ce_dice", loss, (LOGITS, LABELS), 1),
    ("fused_ce_dice_grad", _grad(loss), (LOGITS, LABELS), 1),
]


@pytest.mark.parametrize("name,fn,args,calls", CASES, ids=[c[0] for c in CASES])
def test_lowers_for_cuda_with_pallas_gpu_call(name, fn, args, calls):
  text = jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
  found = sum(text.count(target) for target in backend.GPU_CALL_TARGETS)
  assert found == calls, f"{name}: {found} Pallas GPU calls, expected {calls}"
  for fallback in ("stablehlo.convolution", "reduce_window", "select_and_scatter"):
    assert fallback not in text, f"{name}: lowered text contains {fallback}"


def test_interpret_mode_has_no_gpu_call():
  # The check above can fail: the interpreted kernel lowers to plain HLO loops.
  fn = functools.partial(conv_pallas, interpret=True)
  text = jax.jit(fn).trace(X, W).lower(lowering_platforms=("cuda",)).as_text()
  assert not any(target in text for target in backend.GPU_CALL_TARGETS)


def test_compiler_params_are_triton():
  params = backend.compiler_params(num_warps=8, num_stages=3)
  assert backend.BACKEND == "triton"
  assert (params.num_warps, params.num_stages) == (8, 3)
