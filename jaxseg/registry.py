"""The names of the conv implementations, in one place and without JAX.

`jaxseg.ops.conv` and `conv_transpose` dispatch on these names; the models,
`jaxseg train --conv-impl` and `jaxseg bench --impls` list them from here
(importing this module does not start JAX, so `--help` stays fast).
"""

# Every conv implementation, in the order help texts and benchmarks list them.
# "lax" is plain XLA (its conv and its autodiff); "auto" the fastest tested route
# on the platform a function is lowered for, the models' default.
CONV_IMPLS = ("direct", "im2col", "matrix", "lax", "pallas", "auto")
# Every transposed-conv implementation.
CONV_TRANSPOSE_IMPLS = ("direct", "matrix", "lax", "col2im", "phase", "pallas", "auto")
DEFAULT_CONV_IMPL = "auto"
