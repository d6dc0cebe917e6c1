import sys, numpy as np, jax, jax.numpy as jnp
from jax import lax
sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.abspath(__file__)))
from wino import bench
from jaxseg.ops._common import conv_geometry
from jaxseg.ops.auto import conv_auto   # the models' default route (impl="auto")
import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--batch", type=int, default=8, help="batch size (default 8; 1 for a quick check)")
B = parser.parse_args().batch
from jaxseg import ops
N,H,Cin,C,k,s,p = B,256,1,100,5,2,2
def cur(x,w,b):
  geo = conv_geometry(x.shape, w.shape, stride=(s,s), padding="SAME", dilation=1, groups=1)
  y = jax.nn.relu(conv_auto(x,w,geo) + b)
  return ops.max_pool(y, (p,p), stride=(p,p), padding="SAME")
def fused_kernel(w):
  E = k + s*(p-1)
  blocks = [[jnp.pad(w, ((s*a, E-k-s*a),(s*bb, E-k-s*bb),(0,0),(0,0))) for bb in range(p)] for a in range(p)]
  return jnp.stack([jnp.stack(r, 3) for r in blocks], 3).reshape(E, E, w.shape[2], p*p*C)  # (E,E,Cin,a,b,C)
def fused_s4(x,w,b):
  E = k + s*(p-1); S = s*p
  O = -(-H//s); P = O//p
  lo = max((O-1)*s + k - H, 0)//2
  hi = (P-1)*S + E - H - lo
  wf = fused_kernel(w)
  geo = conv_geometry(x.shape, wf.shape, stride=(S,S), padding=((lo,hi),(lo,hi)), dilation=1, groups=1)
  z = conv_auto(x, wf, geo).reshape(N, P, P, p*p, C)
  return jax.nn.relu(z.max(3) + b)
def fused_s2d(x,w,b):
  E = k + s*(p-1); S = s*p
  O = -(-H//s); P = O//p
  lo = max((O-1)*s + k - H, 0)//2
  q = -(-E//S); Hp = S*(P+q-1)
  xp = jnp.pad(x, ((0,0),(lo,Hp-H-lo),(lo,Hp-H-lo),(0,0)))
  xs = xp.reshape(N, Hp//S, S, Hp//S, S, Cin).transpose(0,1,3,2,4,5).reshape(N,Hp//S,Hp//S,S*S*Cin)
  wf = jnp.pad(fused_kernel(w), ((0,q*S-E),(0,q*S-E),(0,0),(0,0)))
  wf = wf.reshape(q,S,q,S,Cin,p*p*C).transpose(0,2,1,3,4,5).reshape(q,q,S*S*Cin,p*p*C)
  geo = conv_geometry(xs.shape, wf.shape, stride=(1,1), padding="VALID", dilation=1, groups=1)
  z = conv_auto(xs, wf, geo).reshape(N, P, P, p*p, C)
  return jax.nn.relu(z.max(3) + b)
x = jax.random.normal(jax.random.PRNGKey(0),(N,H,H,Cin)); w = jax.random.normal(jax.random.PRNGKey(1),(k,k,Cin,C))*0.2
b = jax.random.normal(jax.random.PRNGKey(3),(C,))*0.1
g = jax.random.normal(jax.random.PRNGKey(2),(N,H//4,H//4,C))
ref = jax.jit(cur)(x,w,b)
rg = jax.jit(lambda x,w,b,g: jax.vjp(lambda w,b: cur(x,w,b), w, b)[1](g))(x,w,b,g)
for nm,f in [('cur',cur),('fused_s4',fused_s4),('fused_s2d',fused_s2d)]*2:
  fj = jax.jit(f); fb = jax.jit(lambda x,w,b,g,f=f: jax.vjp(lambda w,b: f(x,w,b), w, b)[1](g))
  err = float(jnp.max(jnp.abs(fj(x,w,b)-ref))); gr = fb(x,w,b,g)
  gerr = max(float(jnp.max(jnp.abs(a-r))/jnp.max(jnp.abs(r))) for a,r in zip(gr,rg))
  print(f"{nm}: fwd {bench(fj,x,w,b,n=9)*1e3:.1f} ms  f+b {bench(fb,x,w,b,g,n=9)*1e3:.1f} ms  err {err:.0e} gerr {gerr:.0e}", flush=True)
