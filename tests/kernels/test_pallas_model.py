"""A model trains on the Pallas kernels exactly as on lax.conv (interpret mode on CPU)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseg import models


def _two_sgd_steps(conv_impl, x, labels):
  model = models.create("cnn3", num_classes=2, in_channels=1, conv_impl=conv_impl, features=(4,))
  params = model.init(jax.random.key(0), x)["params"]
  tx = optax.sgd(0.5)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(p):
      logits = model.apply({"params": p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for _ in range(2):
    params, opt_state, loss = step(params, opt_state)
    losses.append(loss)
  return params, np.asarray(losses)


def test_cnn3_two_steps_pallas_matches_lax():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 8, 8, 1)).astype(np.float32)
  labels = (x[..., 0] > 0.3).astype(np.int32)
  params_lax, losses_lax = _two_sgd_steps("lax", x, labels)
  params_pallas, losses_pallas = _two_sgd_steps("pallas", x, labels)
  assert losses_lax[1] != losses_lax[0]           # the steps did change the parameters
  # Interpret mode on the CPU is float32-exact up to summation order; a GPU's
  # Triton dot uses TF32.
  tol = dict(atol=1e-5, rtol=1e-4) if jax.default_backend() == "cpu" else dict(atol=2e-2, rtol=2e-2)
  chex.assert_trees_all_close(losses_pallas, losses_lax, **tol)
  chex.assert_trees_all_close(params_pallas, params_lax, **tol)


def test_small_unet_forward_and_grad_pallas_matches_lax():
  """A U-Net (convs, max-pools, transposed convs) on conv_impl="pallas" runs every layer on a
  kernel (pool included) and matches lax in value and gradient."""
  x = np.random.default_rng(1).normal(size=(1, 8, 8, 1)).astype(np.float32)
  labels = (x[..., 0] > 0.0).astype(np.int32)

  def loss_and_grad(conv_impl):
    model = models.create("unet", conv_impl=conv_impl, base=16, depth=1, padding="same")
    params = model.init(jax.random.key(0), x)["params"]
    def loss_fn(p):
      logits = model.apply({"params": p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return jax.jit(jax.value_and_grad(loss_fn))(params)

  want = loss_and_grad("lax")
  got = loss_and_grad("pallas")
  tol = dict(atol=1e-5, rtol=1e-4) if jax.default_backend() == "cpu" else dict(atol=2e-2, rtol=2e-2)
  chex.assert_trees_all_close(got, want, **tol)


def test_pallas_model_traced_here_lowers_to_gpu_kernels_for_cuda():
  # One trace of a conv_impl="pallas" U-Net's loss gradient: lowered for CUDA it holds the Triton
  # kernel calls (convs, pools, transposed convs, forward and backward) and no interpret-mode
  # loop; lowered for the CPU it holds the interpret loops and no GPU call.
  from kernels import backend
  x = jnp.zeros((1, 16, 16, 1))
  labels = jnp.zeros((1, 16, 16), jnp.int32)
  model = models.create("unet", conv_impl="pallas", base=16, depth=1, padding="same")
  params = model.init(jax.random.key(0), x)["params"]
  grad = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
      model.apply({"params": p}, x), labels).mean())
  traced = jax.jit(grad).trace(params)
  cuda = traced.lower(lowering_platforms=("cuda",)).as_text()
  cpu = traced.lower(lowering_platforms=("cpu",)).as_text()
  calls = sum(cuda.count(t) for t in backend.GPU_CALL_TARGETS)
  # at least a forward kernel per conv (7), up-conv (1) and pool (1), and a weight-gradient
  # kernel per conv and up-conv (8)
  assert calls >= 17, calls
  assert "stablehlo.while" not in cuda and "stablehlo.convolution" not in cuda
  assert not any(t in cpu for t in backend.GPU_CALL_TARGETS) and "stablehlo.while" in cpu
