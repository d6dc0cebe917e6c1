// What the one-thread kernel harnesses share: the kernels' source (so they time what the tree holds),
// a clock, and 64-byte-aligned zeroed buffers (XLA's are; a 16-byte-aligned kernel made every vector
// load straddle two lines).
#pragma once
#include "../../../../jaxseg/ops/cpu/_cpu_conv.cc"

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace harness {
inline double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline float* zeros(int64_t n) {
  float* p = static_cast<float*>(aligned_alloc(64, ((n * 4 + 63) / 64) * 64));
  std::memset(p, 0, n * 4);
  return p;
}
}  // namespace harness
