import sys, numpy as np, jax, jax.numpy as jnp
from jax import lax
sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.abspath(__file__)))
from wino import bench
dn=('NHWC','HWIO','NHWC')
def conv(x,w): return lax.conv_general_dilated(x,w,(1,1),'SAME',dimension_numbers=dn)
def dw_xla(x,g,w): return jax.vjp(lambda w: conv(x,w), w)[1](g)[0]
def dx_xla(x,g,w): return jax.vjp(lambda x: conv(x,w), x)[1](g)[0]
def dw_taps(x,g,w):
  N,H,W,C=x.shape; K=g.shape[-1]
  xp=jnp.pad(x,((0,0),(1,1),(1,1),(0,0))).reshape(-1,C)
  gp=jnp.pad(g,((0,0),(0,2),(0,2),(0,0))).reshape(-1,K)
  L=xp.shape[0]-2*(W+2)-2
  outs=[xp[dy*(W+2)+dx: dy*(W+2)+dx+L].T @ gp[:L] for dy in range(3) for dx in range(3)]
  return jnp.stack(outs).reshape(3,3,C,K)
def dw_im2col(x,g,w):
  N,H,W,C=x.shape; K=g.shape[-1]
  xp=jnp.pad(x,((0,0),(1,1),(1,1),(0,0)))
  p=jnp.concatenate([xp[:,dy:dy+H,dx:dx+W] for dy in range(3) for dx in range(3)],-1).reshape(-1,9*C)
  return (p.T @ g.reshape(-1,K)).reshape(3,3,C,K)
def dw_im2col_bf(x,g,w):  # contraction in einsum over N,H,W without reshape
  N,H,W,C=x.shape; K=g.shape[-1]
  xp=jnp.pad(x,((0,0),(1,1),(1,1),(0,0)))
  p=jnp.stack([xp[:,dy:dy+H,dx:dx+W] for dy in range(3) for dx in range(3)],3)
  return jnp.einsum('nhwtc,nhwk->tck',p,g).reshape(3,3,C,K)
def dw_rows(x,g,w):  # 3 row-shift im2col along W only, loop over dy
  N,H,W,C=x.shape; K=g.shape[-1]
  xp=jnp.pad(x,((0,0),(1,1),(1,1),(0,0)))
  p=jnp.concatenate([xp[:,:,dx:dx+W] for dx in range(3)],-1)  # N,H+2,W,3C
  p=p.reshape(N,(H+2)*W,3*C)
  gg=g.reshape(N,H*W,K)
  outs=[jnp.einsum('nrc,nrk->ck', p[:,dy*W:dy*W+H*W], gg) for dy in range(3)]
  return jnp.stack(outs).reshape(3,3,C,K)
for (N,H,W,C,K) in [(8,256,256,16,16),(8,256,256,32,16),(8,128,128,32,32),(8,128,128,64,32)]:
  x=jax.random.normal(jax.random.PRNGKey(0),(N,H,W,C)); w=jax.random.normal(jax.random.PRNGKey(1),(3,3,C,K)); g=jax.random.normal(jax.random.PRNGKey(2),(N,H,W,K))
  ref=dw_xla(x,g,w)
  line=f"{(N,H,W,C,K)} fwd {bench(jax.jit(conv),x,w)*1e3:.1f} dx {bench(jax.jit(dx_xla),x,g,w)*1e3:.1f}"
  for name,f in [('dw_xla',dw_xla),('dw_taps',dw_taps),('dw_im2col',dw_im2col),('dw_im2col_bf',dw_im2col_bf),('dw_rows',dw_rows)]:
    fj=jax.jit(f); err=float(jnp.max(jnp.abs(fj(x,g,w)-ref))/jnp.max(jnp.abs(ref)))
    line+=f" {name} {bench(fj,x,g,w)*1e3:.1f}({err:.0e})"
  print(line,flush=True)
