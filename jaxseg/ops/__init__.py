"""Convolution, transposed convolution and pooling, channels-last, 1 to 3 spatial dims.

Every conv implementation (`CONV_IMPLS`: "direct", "im2col", "matrix", "lax",
"pallas", "auto") has the same keyword-only signature and the semantics of
`lax.conv_general_dilated`; `conv_transpose` is its adjoint; `conv_matrix`
shows the conv as a sparse matrix. "lax" is plain XLA; "auto" is the fastest
tested route on the platform a function is lowered for (`jaxseg.ops.auto`;
`conv_route` says which one a layer takes; `ConvPolicy` holds its rules).
`jaxseg.reference` holds the NumPy loops they are all tested against.

Layout: `_common` (geometry) and `xla` (plain XLA) are leaves; `conv_grad`,
`phase` and the C++ kernels of `cpu/` build on them; `auto` combines those;
`conv` and `conv_transpose` dispatch by name.
"""

from jaxseg.ops.auto import CONV_ROUTES, ROUTE_NOTES, TRANSPOSE_ROUTES
from jaxseg.ops.conv import CONV_IMPLS, conv, conv_route
from jaxseg.ops.conv_matrix import conv_matrix, selection_matrix
from jaxseg.ops.conv_transpose import CONV_TRANSPOSE_IMPLS, conv_transpose, conv_transpose_route
from jaxseg.ops.policy import DEFAULT_POLICY, ConvPolicy
from jaxseg.ops.pooling import (POOL_IMPLS, avg_pool, max_pool, max_pool_lax, max_pool_with_argmax,
                                 max_unpool)

__all__ = [
  "CONV_IMPLS", "CONV_TRANSPOSE_IMPLS", "conv", "conv_transpose", "conv_matrix", "selection_matrix",
  "conv_route", "conv_transpose_route", "CONV_ROUTES", "TRANSPOSE_ROUTES", "ROUTE_NOTES",
  "ConvPolicy", "DEFAULT_POLICY",
  "POOL_IMPLS", "max_pool", "max_pool_lax", "avg_pool",
  "max_pool_with_argmax", "max_unpool",
]
