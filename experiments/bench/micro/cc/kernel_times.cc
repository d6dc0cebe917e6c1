// One thread's forward and weight-gradient kernel times on a 3-D layer, outside XLA, and the FMA
// peak of one core, for the session-9 microkernel measurements (experiments/bench/RESULTS.md).
//
//   g++ -O3 -march=native -std=c++17 -pthread -I$(.venv/bin/python -c "import jax; print(jax.ffi.include_dir())") \
//       experiments/bench/micro/cc/kernel_times.cc -o /tmp/kernel_times
//   taskset -c 0 /tmp/kernel_times 128 128 4 8      # C_in C_out depth height(=width), batch 2
//
// Includes the kernels' source through harness.h, so it times what the tree holds.
#include "harness.h"

namespace {
using harness::now;
using harness::zeros;

// NA independent chains of FMAs: the core's FMA rate (NA >= 8 hides the latency).
template <int NA>
__attribute__((noinline)) double fma_peak(long iters) {
  v16 acc[NA];
  for (int i = 0; i < NA; ++i) acc[i] = splat(0.1f);
  v16 b = splat(1.0000001f), c = splat(1e-7f);
  const double t0 = now();
  for (long i = 0; i < iters; ++i) {
    _Pragma("GCC unroll 32")
    for (int a = 0; a < NA; ++a) acc[a] += b * c;
  }
  const double t = now() - t0;
  float s = 0;
  for (int i = 0; i < NA; ++i) s += acc[i][0];
  if (s == 1234.5f) std::printf(" ");
  return iters * NA * 32.0 / t / 1e9;
}
}  // namespace

int main(int argc, char** argv) {
  const int64_t ci = argc > 1 ? atoi(argv[1]) : 128, co = argc > 2 ? atoi(argv[2]) : 128;
  const int64_t depth = argc > 3 ? atoi(argv[3]) : 4, hw = argc > 4 ? atoi(argv[4]) : 8;
  std::printf("FMA peak, one thread: %.0f GFLOP/s (12 chains), %.0f (24 chains)\n", fma_peak<12>(100000000),
              fma_peak<24>(100000000));
  Dims d{2, hw, hw, ci, hw, hw, co, 3, 3, 1, 1, 1, 1};
  d.d = depth; d.od = depth; d.kd = 3; d.sd = 1; d.pd = 1;
  const Dims p = padded_dims(d);
  const int64_t xn = 2 * depth * hw * hw * ci, xpn = p.n * p.d * p.h * p.w * ci;
  float *x = zeros(xn), *xp = zeros(xpn), *w = zeros(27 * ci * co), *y = zeros(2 * depth * hw * hw * co),
        *dw = zeros(27 * ci * co);
  for (int64_t i = 0; i < xn; ++i) x[i] = (i % 97) * 0.01f;
  for (int64_t i = 0; i < 27 * ci * co; ++i) w[i] = (i % 89) * 0.001f;
  pad_rows(d, p, x, xp, 0, p.n * p.d * p.h);
  const double flops = 2.0 * 2 * depth * hw * hw * 27 * ci * co;
  const int64_t pixels = d.rows() * d.ow, blocks = (co + 63) / 64;
  std::vector<int64_t> rb(d.rows());
  for (int64_t r = 0; r < d.rows(); ++r) {
    const int64_t i = r % p.oh, nz = r / p.oh, z = nz % p.od, n = nz / p.od;
    rb[r] = ((n * p.d + z) * p.h + i) * p.w * p.ci;
  }
  const DwUnits units = dw_units(p);
  const FlatTiling tiling;
  const int reps = std::max<int>(3, static_cast<int>(2e9 / flops));
  for (int round = 0; round < 3; ++round) {
    double t0 = now();
    for (int k = 0; k < reps; ++k) fwd_flat(p, co, xp, w, y, 0, pixels, 0, blocks, tiling);
    const double tf = (now() - t0) / reps;
    t0 = now();
    for (int k = 0; k < reps; ++k) {
      std::memset(dw, 0, 27 * ci * co * 4);
      // the form WeightGrad takes: input channels in lanes for narrow layers, else the general tiles
      if (dw_in_lanes(p)) dw_lanes(p, xp, y, dw, rb.data(), 0, d.rows(), 0, dw_lanes_units(p));
      else dw_flat(p, units, xp, y, dw, rb.data(), 0, d.rows(), 0, units.count);
    }
    const double tw = (now() - t0) / reps;
    std::printf("%ldx%ldx%ld %ld->%ld: forward %.3f ms (%.0f GFLOP/s), weight gradient %.3f ms (%.0f GFLOP/s)\n",
                (long)depth, (long)hw, (long)hw, (long)ci, (long)co, tf * 1e3, flops / tf / 1e9, tw * 1e3,
                flops / tw / 1e9);
  }
}
