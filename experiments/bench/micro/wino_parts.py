import sys, time, numpy as np, jax, jax.numpy as jnp
sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.abspath(__file__)))
from wino import bench
for (P,C,K) in [(512,256,256),(2048,128,128),(131072,16,16),(512,300,300)]:
  v = jax.random.normal(jax.random.PRNGKey(0),(16,P,C)); u = jax.random.normal(jax.random.PRNGKey(1),(16,C,K))
  f1 = jax.jit(lambda v,u: jnp.einsum('tpc,tck->tpk', v, u))
  f2 = jax.jit(lambda v,u: jnp.stack([v[i]@u[i] for i in range(16)]))
  v2 = v.reshape(16*P, C)
  f3 = jax.jit(lambda v,u: v@u[0])
  fl = 16*P*C*K*2/1e9
  t1,t2,t3 = bench(f1,v,u), bench(f2,v,u), bench(f3,v2,u)
  print((P,C,K), f"batched {t1*1e3:.2f}ms {fl/t1:.0f}GF/s  unrolled {t2*1e3:.2f} {fl/t2:.0f}  flat {t3*1e3:.2f} {fl/t3:.0f}")
