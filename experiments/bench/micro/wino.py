import os, sys, time, functools
import numpy as np, jax, jax.numpy as jnp
from jax import lax

def wino_f23(x, w, pad=((1,1),(1,1))):
  N,H,W,C = x.shape; K = w.shape[-1]
  Ho = H + pad[0][0] + pad[0][1] - 2; Wo = W + pad[1][0] + pad[1][1] - 2
  th, tw = -(-Ho//2), -(-Wo//2)
  Hp, Wp = 2*th+2, 2*tw+2
  xp = jnp.pad(x, ((0,0),(pad[0][0], Hp-H-pad[0][0]),(pad[1][0], Wp-W-pad[1][0]),(0,0)))
  def tr(z, axis, n):
    e = [lax.slice_in_dim(z, k, k+2*n-1, 2, axis) for k in range(4)]
    return [e[0]-e[2], e[1]+e[2], e[2]-e[1], e[1]-e[3]]
  rows = tr(xp, 1, th)
  v = jnp.stack([c for r in rows for c in tr(r, 2, tw)], 0).reshape(16, N*th*tw, C)
  g = jnp.array([[1,0,0],[.5,.5,.5],[.5,-.5,.5],[0,0,1]], w.dtype)
  u = jnp.einsum('ai,ijck,bj->abck', g, w, g).reshape(16, C, K)
  m = jnp.einsum('tpc,tck->tpk', v, u).reshape(4,4,N,th,tw,K)
  y0 = m[0]+m[1]+m[2]; y1 = m[1]-m[2]-m[3]
  ys = [[y[0]+y[1]+y[2], y[1]-y[2]-y[3]] for y in (y0, y1)]
  y = jnp.stack([jnp.stack(r, 3) for r in ys], 2)  # N th 2 tw 2 K
  return y.reshape(N, 2*th, 2*tw, K)[:, :Ho, :Wo]

def conv_lax(x, w):
  return lax.conv_general_dilated(x, w, (1,1), 'SAME', dimension_numbers=('NHWC','HWIO','NHWC'))

def bench(f, *a, n=5):
  f(*a); jax.block_until_ready(f(*a))
  ts=[]
  for _ in range(n):
    t=time.perf_counter(); jax.block_until_ready(f(*a)); ts.append(time.perf_counter()-t)
  return np.median(ts)

def main():
  pass
if __name__=="__main__":
  shapes = [(8,16,16,200,300),(8,16,16,300,300),(8,256,256,16,16),(8,128,128,32,32),(8,64,64,64,64),(8,32,32,128,128),(8,16,16,256,256),(8,32,32,256,128),(8,128,128,64,32)]
  if len(sys.argv)>1: shapes=[shapes[int(i)] for i in sys.argv[1].split(',')]
  key = jax.random.PRNGKey(0)
  for (N,H,W,C,K) in shapes:
    x = jax.random.normal(key, (N,H,W,C)); w = jax.random.normal(key, (3,3,C,K))*0.1
    ct = jax.random.normal(key, (N,H,W,K))
    ref = conv_lax(x,w); got = jax.jit(wino_f23)(x,w)
    err = float(jnp.max(jnp.abs(ref-got))/jnp.max(jnp.abs(ref)))
    res = {}
    for name, f in [('lax', conv_lax), ('wino', wino_f23)]:
      fw = jax.jit(f)
      def fb(x, w, ct, f=f):
        y, vjp = jax.vjp(f, x, w); return vjp(ct)
      res[name] = (bench(fw, x, w), bench(jax.jit(fb), x, w, ct))
    fl = 2*N*H*W*C*K*9/1e9
    print(f"{(N,H,W,C,K)} err {err:.1e} fwd lax {res['lax'][0]*1e3:.1f} wino {res['wino'][0]*1e3:.1f} ({res['wino'][0]/res['lax'][0]:.2f}x)  fwdbwd lax {res['lax'][1]*1e3:.1f} wino {res['wino'][1]*1e3:.1f} ({res['wino'][1]/res['lax'][1]:.2f}x)  lax GF/s fwd {fl/res['lax'][0]:.0f}", flush=True)
