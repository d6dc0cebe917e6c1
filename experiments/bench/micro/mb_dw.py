import sys, numpy as np, jax, jax.numpy as jnp
from jax import lax
sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.abspath(__file__)))
from wino import bench
from jaxseg.ops._common import conv_geometry
from jaxseg.ops.xla import conv_lax
import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--batch", type=int, default=8, help="batch size (default 8; 1 for a quick check)")
B = parser.parse_args().batch
from jaxseg.ops import conv_grad
dn=('NHWC','HWIO','NHWC')
def mk(xs, ws, s):
  geo = conv_geometry(xs, ws, stride=s, padding="SAME", dilation=1, groups=1)
  return geo
def dw_xla(x,g,w,geo): return jax.vjp(lambda w: conv_lax(x,w,geo), w)[1](g)[0]
def dw_gemm(x,g,w,geo): return conv_grad.weight_grad(x,g,geo)
def dw_patches(x,g,w,geo):
  kh,kw = geo.kernel
  p = lax.conv_general_dilated_patches(x, (kh,kw), geo.stride, geo.pads, dimension_numbers=dn)  # N,Ho,Wo,C*kh*kw  (C major)
  C = x.shape[-1]; K = g.shape[-1]
  dw = p.reshape(-1, C*kh*kw).T @ g.reshape(-1, K)    # (C, kh, kw) order
  return dw.reshape(C, kh, kw, K).transpose(1,2,0,3)
def dw_s2d(x,g,w,geo):
  # stride-2 kxk conv == stride-1 ceil(k/2) conv on space-to-depth(2) input
  (lo0,hi0),(lo1,hi1) = geo.pads; kh,kw = geo.kernel; N,H,W,C = x.shape; K=g.shape[-1]
  Ho,Wo = g.shape[1:3]; qh,qw = -(-kh//2), -(-kw//2)
  Hp, Wp = 2*(Ho+qh-1), 2*(Wo+qw-1)
  xp = jnp.pad(x, ((0,0),(lo0, Hp-H-lo0),(lo1, Wp-W-lo1),(0,0)))
  xs = xp.reshape(N, Hp//2, 2, Wp//2, 2, C).transpose(0,1,3,2,4,5).reshape(N, Hp//2, Wp//2, 4*C)
  d = jax.vjp(lambda v: lax.conv_general_dilated(xs, v, (1,1), 'VALID', dimension_numbers=dn), jnp.zeros((qh,qw,4*C,K)))[1](g)[0]
  d = d.reshape(qh,qw,2,2,C,K).transpose(0,2,1,3,4,5).reshape(2*qh,2*qw,C,K)
  return d[:kh,:kw]
cases = {'conv1': ((B,256,256,1),(5,5,1,100),2), 'conv2': ((B,64,64,100),(5,5,100,200),2)}
for name,(xs,ws,s) in cases.items():
  geo = mk(xs,ws,s)
  x=jax.random.normal(jax.random.PRNGKey(0),xs); w=jax.random.normal(jax.random.PRNGKey(1),ws); g=jax.random.normal(jax.random.PRNGKey(2),(xs[0],)+geo.out_shape+(ws[-1],))
  ref = jax.jit(dw_xla, static_argnums=3)(x,g,w,geo)
  line=name
  for fn,f in [('xla',dw_xla),('gemm',dw_gemm),('patches',dw_patches),('s2d',dw_s2d)]:
    fj=jax.jit(f, static_argnums=3); err=float(jnp.max(jnp.abs(fj(x,g,w,geo)-ref))/jnp.max(jnp.abs(ref)))
    line+=f"  {fn} {bench(fj,x,g,w,geo,n=9)*1e3:.1f}ms({err:.0e})"
  print(line, flush=True)
