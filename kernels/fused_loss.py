"""Softmax cross-entropy and Dice partial sums in one pass over the logits.

`fused_ce_dice(logits, labels)` reads each block of pixels once and returns
the mean softmax cross-entropy and, per class, the soft-Dice partial sums
sum(p*t), sum(p), sum(t) (p softmax probabilities, t one-hot labels), from
which any CE + Dice combination follows. The backward pass is a second
one-pass kernel that recomputes the softmax and writes d/dlogits directly.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kernels import backend

__all__ = ["LossBlockSizes", "fused_ce_dice", "fused_ce_dice_reference"]


@dataclasses.dataclass(frozen=True)
class LossBlockSizes:
  """block_rows pixels per grid step (a power of two)."""
  block_rows: int = 256
  num_warps: int = 4
  num_stages: int = 1


def _softmax_terms(z_ref, lab_ref, num_classes):
  z = z_ref[...].astype(jnp.float32)                      # (rows, C_p)
  lab = lab_ref[...]                                      # (rows, 1)
  cls = jax.lax.broadcasted_iota(jnp.int32, z.shape, 1)
  z = jnp.where(cls < num_classes, z, -jnp.inf)           # padded classes get p = 0
  z = z - jnp.max(z, axis=1, keepdims=True)
  e = jnp.exp(z)
  s = jnp.sum(e, axis=1, keepdims=True)
  valid = lab >= 0                                        # padded rows carry label -1
  onehot = (cls == lab).astype(jnp.float32)
  p = jnp.where(valid, e / s, 0.0)
  return z, s, p, onehot, valid


def _fwd_kernel(z_ref, lab_ref, ce_ref, inter_ref, psum_ref, tsum_ref, *, num_classes):
  z, s, p, onehot, valid = _softmax_terms(z_ref, lab_ref, num_classes)
  logp_label = jnp.sum(jnp.where(onehot > 0, z, 0.0), axis=1, keepdims=True) - jnp.log(s)
  ce = jnp.sum(jnp.where(valid, -logp_label, 0.0))
  ce_ref[...] = jnp.full(ce_ref.shape, ce, jnp.float32)
  inter_ref[...] = jnp.sum(p * onehot, axis=0)
  psum_ref[...] = jnp.sum(p, axis=0)
  tsum_ref[...] = jnp.sum(onehot, axis=0)


def _bwd_kernel(z_ref, lab_ref, gce_ref, gi_ref, gp_ref, dz_ref, *, num_classes):
  _, _, p, onehot, valid = _softmax_terms(z_ref, lab_ref, num_classes)
  # d inter_c/dz_k = t_c p_c (d_ck - p_k), d psum_c/dz_k = p_c (d_ck - p_k).
  v = gi_ref[...] * onehot + gp_ref[...]
  dz = p * (v - jnp.sum(v * p, axis=1, keepdims=True))
  dz += gce_ref[...] * jnp.where(valid, p - onehot, 0.0)
  dz_ref[...] = dz.astype(dz_ref.dtype)


@dataclasses.dataclass(frozen=True)
class _Config:
  num_classes: int
  block_sizes: LossBlockSizes
  interpret: bool | None  # None: chosen per platform when lowering (backend.pallas_call)


def _specs(cfg, c_p):
  br = cfg.block_sizes.block_rows
  return (pl.BlockSpec((br, c_p), lambda i: (i, 0)), pl.BlockSpec((br, 1), lambda i: (i, 0)))


def _params(cfg):
  bs = cfg.block_sizes
  return backend.compiler_params(num_warps=bs.num_warps, num_stages=bs.num_stages)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _sums(z, lab, cfg):
  rows, c_p = z.shape
  blocks = rows // cfg.block_sizes.block_rows
  part = pl.BlockSpec((None, c_p), lambda i: (i, 0))
  outs = backend.pallas_call(
      functools.partial(_fwd_kernel, num_classes=cfg.num_classes),
      grid=(blocks,),
      in_specs=list(_specs(cfg, c_p)),
      out_specs=[part] * 4,
      out_shape=[jax.ShapeDtypeStruct((blocks, c_p), jnp.float32)] * 4,
      compiler_params=_params(cfg), interpret=cfg.interpret, name="fused_ce_dice_fwd",
  )(z, lab)
  ce, inter, psum, tsum = (o.sum(0) for o in outs)
  return ce[0], inter, psum, tsum


def _sums_fwd(z, lab, cfg):
  return _sums(z, lab, cfg), (z, lab)


def _sums_bwd(cfg, res, cts):
  z, lab = res
  g_ce, g_inter, g_psum, _ = cts            # label sums do not depend on the logits
  rows, c_p = z.shape
  row = lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (c_p,)).reshape(1, c_p)
  full = pl.BlockSpec((1, c_p), lambda i: (0, 0))
  dz = backend.pallas_call(
      functools.partial(_bwd_kernel, num_classes=cfg.num_classes),
      grid=(rows // cfg.block_sizes.block_rows,),
      in_specs=list(_specs(cfg, c_p)) + [full] * 3,
      out_specs=_specs(cfg, c_p)[0],
      out_shape=jax.ShapeDtypeStruct(z.shape, z.dtype),
      compiler_params=_params(cfg), interpret=cfg.interpret, name="fused_ce_dice_bwd",
  )(z, lab, row(g_ce), row(g_inter), row(g_psum))
  return dz, None


_sums.defvjp(_sums_fwd, _sums_bwd)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _fused(logits, labels, cfg):
  c = logits.shape[-1]
  z = logits.reshape(-1, c)
  if c == 1:                      # one sigmoid logit == softmax over [0, z]
    z = jnp.concatenate([jnp.zeros_like(z), z], axis=1)
  rows, c2 = z.shape
  br = cfg.block_sizes.block_rows
  rows_p, c_p = backend.round_up(rows, br), backend.next_power_of_2(max(c2, 2))
  z = jnp.pad(z, ((0, rows_p - rows), (0, c_p - c2)))
  lab = jnp.pad(labels.reshape(-1, 1).astype(jnp.int32), ((0, rows_p - rows), (0, 0)),
                constant_values=-1)
  ce, inter, psum, tsum = _sums(z, lab, cfg)
  return ce / rows, inter[:c2], psum[:c2], tsum[:c2]


def fused_ce_dice(logits, labels, *, block_sizes=None, interpret=None):
  """(ce_mean, inter, pred_sum, label_sum) for logits (N, *spatial, C), labels (N, *spatial).

  ce_mean: mean softmax cross-entropy over all pixels; inter, pred_sum,
  label_sum: (C,) per-class sums of p*t, p, t over all pixels. C == 1 is one
  sigmoid logit, handled as the two classes [background, foreground], so the
  sums then have length 2. Differentiable in logits.
  """
  if logits.ndim < 2 or logits.shape[:-1] != labels.shape:
    raise ValueError(f"logits.shape={logits.shape} must be labels.shape={labels.shape} + (C,)")
  bs = block_sizes or LossBlockSizes()
  if bs.block_rows < 1 or bs.block_rows & (bs.block_rows - 1):
    raise ValueError(f"block_rows={bs.block_rows} must be a power of two")
  num_classes = max(logits.shape[-1], 2)
  cfg = _Config(num_classes, bs, backend.resolve_interpret(interpret))
  return _fused(logits, labels, cfg)


def fused_ce_dice_reference(logits, labels):
  """Plain-jnp reference of fused_ce_dice."""
  logits = logits.astype(jnp.float32)
  if logits.shape[-1] == 1:
    logits = jnp.concatenate([jnp.zeros_like(logits), logits], axis=-1)
  c = logits.shape[-1]
  logp = jax.nn.log_softmax(logits.reshape(-1, c), axis=-1)
  t = jax.nn.one_hot(labels.reshape(-1), c)
  p = jnp.exp(logp)
  return -jnp.mean(jnp.sum(t * logp, axis=-1)), (p * t).sum(0), p.sum(0), t.sum(0)
