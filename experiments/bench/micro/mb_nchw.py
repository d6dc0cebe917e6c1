import sys, time, numpy as np, jax, jax.numpy as jnp
from jax import lax
sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.abspath(__file__)))
from wino import bench
N,H,C,K = 8,256,16,16
def direct_nchw(x, w):   # x (N,C,H,W) w (3,3,C,K)
  xp = jnp.pad(x, ((0,0),(0,0),(1,1),(1,1)))
  acc = None
  for c in range(C):
    for dy in range(3):
      for dx in range(3):
        t = xp[:, c:c+1, dy:dy+H, dx:dx+H] * w[dy,dx,c][None,:,None,None]
        acc = t if acc is None else acc + t
  return acc
def direct_nhwc(x, w):   # x (N,H,W,C)
  xp = jnp.pad(x, ((0,0),(1,1),(1,1),(0,0)))
  acc = None
  for c in range(C):
    for dy in range(3):
      for dx in range(3):
        t = xp[:, dy:dy+H, dx:dx+H, c:c+1] * w[dy,dx,c]
        acc = t if acc is None else acc + t
  return acc
x = jax.random.normal(jax.random.PRNGKey(0),(N,H,H,C)); w = jax.random.normal(jax.random.PRNGKey(1),(3,3,C,K))*0.1
ref = lax.conv_general_dilated(x,w,(1,1),'SAME',dimension_numbers=('NHWC','HWIO','NHWC'))
xc = x.transpose(0,3,1,2)
for nm, f, a in [('xla_nhwc', lambda x,w: lax.conv_general_dilated(x,w,(1,1),'SAME',dimension_numbers=('NHWC','HWIO','NHWC')), x),
                 ('xla_nchw', lambda x,w: lax.conv_general_dilated(x,w,(1,1),'SAME',dimension_numbers=('NCHW','HWIO','NCHW')), xc),
                 ('direct_nchw', direct_nchw, xc), ('direct_nhwc', direct_nhwc, x)]:
  t0=time.time(); fj = jax.jit(f); o = fj(a,w).block_until_ready(); ct=time.time()-t0
  if o.shape[1]==K and o.shape[-1]!=K: o = o.transpose(0,2,3,1)
  print(nm, f"compile {ct:.1f}s fwd {bench(fj,a,w,n=7)*1e3:.1f} ms err {float(jnp.max(jnp.abs(o-ref))):.0e}", flush=True)
