import sys, numpy as np, jax, jax.numpy as jnp
from jax import lax
sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.abspath(__file__)))
from wino import bench
from jaxseg.ops._common import conv_geometry
from jaxseg.ops.xla import conv_lax, tap_slices
import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--batch", type=int, default=8, help="batch size (default 8; 1 for a quick check)")
B = parser.parse_args().batch
from jaxseg.ops import conv_grad
xs, ws, s = (B,64,64,100), (5,5,100,200), 2
geo = conv_geometry(xs, ws, stride=s, padding="SAME", dilation=1, groups=1)
x = jax.random.normal(jax.random.PRNGKey(0), xs); w = jax.random.normal(jax.random.PRNGKey(1), ws)*0.05
g = jax.random.normal(jax.random.PRNGKey(2), (B,)+geo.out_shape+(200,))
def dx_xla(w,g): return jax.vjp(lambda v: conv_lax(v,w,geo), x)[1](g)[0]
def dx_col2im(w,g):
  N,H,W,C = xs; Ho,Wo = geo.out_shape; K=ws[-1]; kh,kw = ws[:2]
  dcols = (g.reshape(-1,K) @ w.reshape(-1,K).T).reshape(N,Ho,Wo,kh,kw,C)
  (lo0,_),(lo1,_) = geo.pads
  qh, qw = -(-kh//s), -(-kw//s)
  A, B = Ho+qh-1, Wo+qw-1          # phase image size
  phases = []
  for py in range(s):
    row = []
    for px in range(s):
      acc = None
      for a in range(qh):
        for b in range(qw):
          dy, dxx = s*a+py, s*b+px
          if dy >= kh or dxx >= kw: continue
          t = lax.pad(dcols[:,:,:,dy,dxx,:], 0.0, ((0,0,0),(a,A-Ho-a,0),(b,B-Wo-b,0),(0,0,0)))
          acc = t if acc is None else acc + t
      row.append(acc)
    phases.append(jnp.stack(row, 3))          # N,A,B,s,C
  full = jnp.stack(phases, 2).reshape(N, A*s, B*s, C)   # N,A,s,B,s,C
  return full[:, lo0:lo0+H, lo1:lo1+W]
def dw_gemm(g): return conv_grad.weight_grad(x, g, geo)
def dw_big(g):
  cols = jnp.stack(tap_slices(x, geo), 3).reshape(-1, 25*100)
  return (cols.T @ g.reshape(-1,200)).reshape(5,5,100,200)
def dw_xla(g): return jax.vjp(lambda w: conv_lax(x,w,geo), w)[1](g)[0]
r = jax.jit(dx_xla)(w,g); c = jax.jit(dx_col2im)(w,g)
print("dx err", float(jnp.max(jnp.abs(r-c))/jnp.max(jnp.abs(r))))
r = jax.jit(dw_xla)(g); c = jax.jit(dw_big)(g)
print("dw err", float(jnp.max(jnp.abs(r-c))/jnp.max(jnp.abs(r))))
for _ in range(2):
  print("fwd", bench(jax.jit(lambda x,w: conv_lax(x,w,geo)), x, w, n=9)*1e3,
        "dx xla", bench(jax.jit(dx_xla),w,g,n=9)*1e3, "dx col2im", bench(jax.jit(dx_col2im),w,g,n=9)*1e3,
        "dw gemm", bench(jax.jit(dw_gemm),g,n=9)*1e3, "dw big", bench(jax.jit(dw_big),g,n=9)*1e3, "dw xla", bench(jax.jit(dw_xla),g,n=9)*1e3, flush=True)
