// One thread, outside XLA: the 3-D Winograd route's depth products (Wino3Product, kinds 0 and 2: 16
// positions' (3, 1, 1) convs on depth-padded planes of tiles) against the direct kernels' forward and
// weight gradient of the same 3x3x3 layer, in turn in one process; GFLOP/s of each counts the
// multiplications it does (the products 16 / 36 of the direct sum's). Session 11
// (experiments/bench/RESULTS.md).
//
//   g++ -O3 -march=native -std=c++17 -pthread -I$(.venv/bin/python -c "import jax; print(jax.ffi.include_dir())") \
//       experiments/bench/micro/cc/wino3_product.cc -o /tmp/wino3_product
//   taskset -c 0 /tmp/wino3_product 64 64 8 16      # C_in C_out depth height(=width), batch 2
#include "harness.h"

#include <algorithm>
#include <vector>

namespace {
using harness::now;
using harness::zeros;

template <typename F>
double best_of(int reps, F f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now();
    f();
    best = std::min(best, now() - t0);
  }
  return best;
}
}  // namespace

int main(int argc, char** argv) {
  const int64_t ci = argc > 1 ? atoi(argv[1]) : 64, co = argc > 2 ? atoi(argv[2]) : 64;
  const int64_t depth = argc > 3 ? atoi(argv[3]) : 8, hw = argc > 4 ? atoi(argv[4]) : 16, n = 2;
  const int reps = argc > 5 ? atoi(argv[5]) : 20;
  Dims d{n, hw, hw, ci, hw, hw, co, 3, 3, 1, 1, 1, 1};
  d.d = depth; d.od = depth; d.kd = 3; d.sd = 1; d.pd = 1;
  const Dims p = padded_dims(d);
  const int64_t co_pad = (co + 15) / 16 * 16, xpn = p.n * p.d * p.h * p.w * ci, yn = n * depth * hw * hw * co;
  float *xp = zeros(xpn), *w = zeros(27 * ci * co_pad), *y = zeros(yn), *dw = zeros(27 * ci * co);
  for (int64_t i = 0; i < xpn; ++i) xp[i] = ((i * 7) % 97) * 0.01f - 0.4f;
  for (int64_t i = 0; i < 27 * ci * co_pad; ++i) w[i] = ((i * 3) % 89) * 0.01f - 0.4f;
  for (int64_t i = 0; i < yn; ++i) y[i] = ((i * 5) % 89) * 0.01f - 0.4f;
  const int64_t th = (hw + 1) / 2, tiles = th * th, padded = n * (depth + 2) * tiles, rows = n * depth * tiles;
  const Dims dm = wino3_depth_dims(n, depth, tiles, ci, co);
  float *v = zeros(16 * padded * ci), *u = zeros(16 * 3 * ci * co_pad), *m = zeros(16 * rows * co),
        *dmp = zeros(16 * padded * co), *du = zeros(16 * 3 * ci * co);
  for (int64_t i = 0; i < 16 * padded * ci; ++i) v[i] = ((i * 7) % 97) * 0.01f - 0.4f;
  for (int64_t i = 0; i < 16 * 3 * ci * co_pad; ++i) u[i] = ((i * 3) % 89) * 0.01f - 0.4f;
  for (int64_t i = 0; i < 16 * padded * co; ++i) dmp[i] = ((i * 5) % 89) * 0.01f - 0.4f;
  const int64_t pixels = n * depth * hw * hw;
  const double direct_flop = 2.0 * pixels * 27 * ci * co, product_flop = 2.0 * 16 * rows * 3 * ci * co;
  std::vector<int64_t> rb(p.rows()), rbm(n * depth);
  for (int64_t r = 0; r < p.rows(); ++r) {
    const int64_t i = r % p.oh, nz = r / p.oh, z = nz % p.od, nn = nz / p.od;
    rb[r] = ((nn * p.d + z) * p.h + i) * p.w * ci;
  }
  for (int64_t r = 0; r < n * depth; ++r) rbm[r] = (r + 2 * (r / depth)) * tiles * ci;
  const DwUnits units = dw_units(p), munits = dw_units(dm);
  for (int round = 0; round < 3; ++round) {
    const double tf = best_of(reps, [&] { fwd_flat(p, co_pad, xp, w, y, 0, pixels, 0, (co + 63) / 64, FlatTiling{}); });
    const double tp = best_of(reps, [&] {
      for (int k = 0; k < 16; ++k)
        fwd_flat(dm, co_pad, v + k * padded * ci, u + k * 3 * ci * co_pad, m + k * rows * co, 0, rows, 0, (co + 63) / 64,
                 FlatTiling{});
    });
    const double tw = best_of(reps, [&] {
      std::memset(dw, 0, 27 * ci * co * 4);
      dw_flat(p, units, xp, y, dw, rb.data(), 0, p.rows(), 0, units.count);
    });
    const double tq = best_of(reps, [&] {
      for (int k = 0; k < 16; ++k) {
        float* o = du + k * 3 * ci * co;
        std::memset(o, 0, 3 * ci * co * 4);
        for (int64_t j = 0; j < n; ++j)
          dw_flat(dm, munits, v + k * padded * ci, dmp + k * padded * co + (2 * j + 1) * tiles * co, o, rbm.data(),
                  j * depth, (j + 1) * depth, 0, munits.count);
      }
    });
    std::printf("%ld->%ld %ldx%ldx%ld | fwd: direct %.3f ms %.0f GFLOP/s, product %.3f ms %.0f GFLOP/s, ratio %.2f"
                " | dW: direct %.3f ms %.0f, product %.3f ms %.0f, ratio %.2f\n",
                (long)ci, (long)co, (long)depth, (long)hw, (long)hw, tf * 1e3, direct_flop / tf * 1e-9, tp * 1e3,
                product_flop / tp * 1e-9, tp / tf, tw * 1e3, direct_flop / tw * 1e-9, tq * 1e3, product_flop / tq * 1e-9,
                tq / tw);
  }
  return 0;
}
