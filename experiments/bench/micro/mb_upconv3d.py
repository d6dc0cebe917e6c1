"""3-D 2x2x2/2 up-convs: phase_rows (default) vs phase (one stride-1 conv + depth-to-space) vs XLA vs torch."""
import time, statistics
import numpy as np, jax, jax.numpy as jnp
from jaxseg import ops
from jaxseg.ops.policy import DEFAULT_POLICY
import dataclasses
LAYERS = [(4, 8, 8, 128, 64), (8, 16, 16, 64, 32), (16, 32, 32, 32, 16)]  # input D,H,W,Cin -> Cout
forms = {"rows": DEFAULT_POLICY, "phase": dataclasses.replace(DEFAULT_POLICY, transpose_rows=False)}
def step(policy, impl):
  def f(y, w, g):
    out, vjp = jax.vjp(lambda a, b: ops.conv_transpose(a, b, stride=2, padding="SAME", impl=impl, policy=policy), y, w)
    return (out, *vjp(g))
  return jax.jit(f)
try:
  import torch; torch.set_num_threads(2)
except ImportError:
  torch = None
rng = np.random.default_rng(0)
for d, h, w_, cin, cout in LAYERS:
  y = jnp.asarray(rng.normal(size=(2, d, h, w_, cin)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(2, 2, 2, cout, cin)) * 0.1, jnp.float32)
  g = jnp.asarray(rng.normal(size=(2, 2 * d, 2 * h, 2 * w_, cout)), jnp.float32)
  fns = {k: step(p, "auto") for k, p in forms.items()}
  fns["xla"] = step(None, "lax")
  ref = jax.block_until_ready(fns["xla"](y, w, g))
  for k, f in fns.items():
    got = jax.block_until_ready(f(y, w, g))
    err = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(got, ref))
    assert err < 1e-4, (k, err)
  if torch is not None:
    ty = torch.tensor(np.asarray(y).transpose(0, 4, 1, 2, 3).copy(), requires_grad=True)
    tw = torch.tensor(np.asarray(w).transpose(4, 3, 0, 1, 2).copy(), requires_grad=True)
    tg = torch.tensor(np.asarray(g).transpose(0, 4, 1, 2, 3).copy())
    def tstep():
      out = torch.nn.functional.conv_transpose3d(ty, tw, stride=2)
      gy, gw = torch.autograd.grad(out, (ty, tw), tg)
      return out
    fns["torch"] = tstep
  times = {k: [] for k in fns}
  for r in range(7):
    for k, f in fns.items():
      t = time.perf_counter()
      out = f(y, w, g) if k != "torch" else f()
      if k != "torch":
        jax.block_until_ready(out)
      times[k].append(time.perf_counter() - t)
  print(f"{d}x{h}x{w_}x{cin} -> {cout}: " + "  ".join(f"{k} {1e3 * statistics.median(v[1:]):.2f} ms" for k, v in times.items()), flush=True)
