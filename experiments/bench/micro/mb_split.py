import sys; sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.abspath(__file__)))
from wino import bench
import jax, jax.numpy as jnp
from jax import lax
dn=('NHWC','HWIO','NHWC')
def conv(x,w): return lax.conv_general_dilated(x,w,(1,1),'SAME',dimension_numbers=dn)
def dw(x,g,w): return jax.vjp(lambda v: conv(x,v), w)[1](g)[0]
def dw_split(x,g,w,k=2):
  n = x.shape[0]//k
  return sum(dw(x[i*n:(i+1)*n], g[i*n:(i+1)*n], w) for i in range(k))
def dx(x,g,w): return jax.vjp(lambda v: conv(v,w), x)[1](g)[0]
def dx_split(x,g,w,k=2):
  n = x.shape[0]//k
  return jnp.concatenate([dx(x[i*n:(i+1)*n], g[i*n:(i+1)*n], w) for i in range(k)])
for (N,H,C,K) in [(8,256,16,16),(8,256,32,16),(8,128,32,32),(8,64,64,64)]:
  x=jax.random.normal(jax.random.PRNGKey(0),(N,H,H,C)); g=jax.random.normal(jax.random.PRNGKey(2),(N,H,H,K)); w=jnp.zeros((3,3,C,K))
  r = [bench(jax.jit(f),x,g,w,n=7)*1e3 for f in (dw, dw_split, lambda x,g,w: dw_split(x,g,w,4), lambda x,g,w: dw_split(x,g,w,8), dx, dx_split)]
  print((N,H,C,K), "dw %.1f split2 %.1f split4 %.1f split8 %.1f | dx %.1f split2 %.1f" % tuple(r), flush=True)
