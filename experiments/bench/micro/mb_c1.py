import sys, numpy as np, jax, jax.numpy as jnp
from jax import lax
sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.abspath(__file__)))
from wino import bench
from jaxseg.ops._common import conv_geometry
from jaxseg.ops.conv import conv_im2col, conv_direct
from jaxseg.ops.xla import conv_lax, tap_slices
import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--batch", type=int, default=8, help="batch size (default 8; 1 for a quick check)")
B = parser.parse_args().batch
from jaxseg.ops import conv_grad
def fma(x, w, geo):
  sl = tap_slices(x, geo)   # each (N, *out, 1)
  wt = w.reshape(len(sl), -1)
  acc = sl[0] * wt[0]
  for t in range(1, len(sl)): acc = acc + sl[t] * wt[t]
  return acc
for xs, ws, s in [((B,256,256,1),(3,3,1,16),1), ((B,256,256,1),(5,5,1,100),2)]:
  geo = conv_geometry(xs, ws, stride=s, padding="SAME", dilation=1, groups=1)
  x = jax.random.normal(jax.random.PRNGKey(0), xs); w = jax.random.normal(jax.random.PRNGKey(1), ws)*0.1
  g = jax.random.normal(jax.random.PRNGKey(2), (B,)+geo.out_shape+(ws[-1],))
  ref = conv_lax(x,w,geo)
  for nm,f in [('xla',conv_lax),('fma',fma),('im2col',conv_im2col)]:
    fj = jax.jit(lambda x,w,f=f: f(x,w,geo))
    err = float(jnp.max(jnp.abs(fj(x,w)-ref)))
    print(xs, ws, nm, "fwd", round(bench(fj,x,w,n=9)*1e3,1), f"err {err:.0e}", flush=True)
  dw_x = jax.jit(lambda g: jax.vjp(lambda w: conv_lax(x,w,geo), w)[1](g)[0])
  dw_g = jax.jit(lambda g: conv_grad.weight_grad(x,g,geo))
  dw_f = jax.jit(lambda g: jax.vjp(lambda w: fma(x,w,geo), w)[1](g)[0])
  print("  dW xla", round(bench(dw_x,g,n=9)*1e3,1), "gemm", round(bench(dw_g,g,n=9)*1e3,1), "fma-autodiff", round(bench(dw_f,g,n=9)*1e3,1), flush=True)
