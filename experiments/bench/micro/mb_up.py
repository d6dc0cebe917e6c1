import sys, numpy as np, jax, jax.numpy as jnp
from jax import lax
sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.abspath(__file__)))
from wino import bench
import argparse
from jaxseg.ops._common import conv_geometry
from jaxseg.ops import phase
parser = argparse.ArgumentParser()
parser.add_argument("--batch", type=int, default=8, help="batch size (default 8; 1 for a quick check)")
B = parser.parse_args().batch
def cur(y, w, geo):  # one GEMM + depth-to-space (the form before phase._no_overlap)
  return phase.conv_transpose_phase(y, w, geo, rows=False)
def ops_rows(y, w, geo):  # jaxseg.ops.phase's GEMM-rows form (ConvPolicy.transpose_rows, the default)
  return phase.conv_transpose_phase(y, w, geo, rows=True)
def rows(y, w, geo):
  # kernel == stride == (2,2), SAME; w (2,2,Cout,Cin)
  N,h,ww,C = y.shape; K = w.shape[-2]
  outs = []
  for a in range(2):
    wa = w[a].transpose(2,0,1).reshape(C, 2*K)   # (Cin, (b, Cout))
    za = (y.reshape(-1, C) @ wa).reshape(N, h, 1, ww*2*K)
    outs.append(za)
  return jnp.concatenate(outs, 2).reshape(N, 2*h, 2*ww, K)
def rows_dg(y, w, geo):
  N,h,ww,C = y.shape; K = w.shape[-2]
  outs = []
  for a in range(2):
    wa = w[a].transpose(2,0,1).reshape(C, 2*K)
    za = lax.dot_general(y, wa, (((3,),(0,)),((),()))).reshape(N, h, 1, ww*2*K)
    outs.append(za)
  return jnp.concatenate(outs, 2).reshape(N, 2*h, 2*ww, K)
for (N,h,C,K) in [(B,128,32,16),(B,64,64,32),(B,32,128,64),(B,16,256,128)]:
  y = jax.random.normal(jax.random.PRNGKey(0),(N,h,h,C)); w = jax.random.normal(jax.random.PRNGKey(1),(2,2,K,C))
  geo = conv_geometry((N,2*h,2*h,K), (2,2,K,C), stride=2, padding="SAME", dilation=1, groups=1)
  g = jax.random.normal(jax.random.PRNGKey(2),(N,2*h,2*h,K))
  ref = jax.jit(cur, static_argnums=2)(y,w,geo)
  line = f"{(N,h,C,K)}"
  for nm, f in [('cur',cur),('ops_rows',ops_rows),('rows',rows),('rows_dg',rows_dg)]:
    fj = jax.jit(f, static_argnums=2)
    err = float(jnp.max(jnp.abs(fj(y,w,geo)-ref)))
    def fb(y,w,g,f=f):
      o, vjp = jax.vjp(lambda y,w: f(y,w,geo), y, w); return vjp(g)
    line += f"  {nm} fwd {bench(fj,y,w,geo)*1e3:.1f} f+b {bench(jax.jit(fb),y,w,g)*1e3:.1f} ({err:.0e})"
  print(line, flush=True)
