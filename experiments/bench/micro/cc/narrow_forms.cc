// One thread, outside XLA: the forward and weight-gradient kernels of a 3-D layer with at most 16
// output channels in the form the tree takes for them (sliding strips, input channels in lanes) and
// in the general form (fwd_flat_block with one vector of output channels, dw_flat), in turn in one
// process, with the largest difference between the two forms' results. Session 10
// (experiments/bench/RESULTS.md).
//
//   g++ -O3 -march=native -std=c++17 -pthread -I$(.venv/bin/python -c "import jax; print(jax.ffi.include_dir())") \
//       experiments/bench/micro/cc/narrow_forms.cc -o /tmp/narrow_forms
//   taskset -c 0 /tmp/narrow_forms 16 16 32 64      # C_in C_out depth height(=width), batch 2
#include "harness.h"

#include <cmath>

namespace {
using harness::now;
using harness::zeros;

double max_diff(const float* a, const float* b, int64_t n) {
  double e = 0;
  for (int64_t i = 0; i < n; ++i) e = std::max(e, static_cast<double>(std::fabs(a[i] - b[i])));
  return e;
}
}  // namespace

int main(int argc, char** argv) {
  const int64_t ci = argc > 1 ? atoi(argv[1]) : 16, co = argc > 2 ? atoi(argv[2]) : 16;
  const int64_t depth = argc > 3 ? atoi(argv[3]) : 32, hw = argc > 4 ? atoi(argv[4]) : 64;
  Dims d{2, hw, hw, ci, hw, hw, co, 3, 3, 1, 1, 1, 1};
  d.d = depth; d.od = depth; d.kd = 3; d.sd = 1; d.pd = 1;
  const Dims p = padded_dims(d);
  if (!slides(p, co) || !dw_in_lanes(p)) {
    std::printf("%ld -> %ld: not a layer of the narrow forms\n", (long)ci, (long)co);
    return 2;
  }
  const int64_t co_pad = (co + 15) / 16 * 16, xn = 2 * depth * hw * hw * ci, xpn = p.n * p.d * p.h * p.w * ci,
                yn = 2 * depth * hw * hw * co, wn = 27 * ci * co;
  float *x = zeros(xn), *xp = zeros(xpn), *w = zeros(27 * ci * co_pad), *y = zeros(yn), *y2 = zeros(yn),
        *g = zeros(yn), *dw = zeros(wn), *dw2 = zeros(wn);
  for (int64_t i = 0; i < xn; ++i) x[i] = ((i * 7) % 97) * 0.01f - 0.4f;
  for (int64_t i = 0; i < yn; ++i) g[i] = ((i * 5) % 89) * 0.01f - 0.4f;
  for (int64_t i = 0; i < 27 * ci; ++i)
    for (int64_t o = 0; o < co; ++o) w[i * co_pad + o] = ((i * 13 + o) % 89) * 0.001f - 0.04f;
  pad_rows(d, p, x, xp, 0, p.n * p.d * p.h);
  std::vector<int64_t> rb(d.rows());
  for (int64_t r = 0; r < d.rows(); ++r) {
    const int64_t i = r % p.oh, nz = r / p.oh, z = nz % p.od, n = nz / p.od;
    rb[r] = ((n * p.d + z) * p.h + i) * p.w * p.ci;
  }
  const double flops = 2.0 * 2 * depth * hw * hw * 27 * ci * co;
  const int64_t pixels = d.rows() * d.ow, tail = co % 16;
  const int64_t chunk = std::max<int64_t>(1, FlatTiling().chunk_bytes / (3 * ci * 64 * 4));
  const DwUnits units = dw_units(p);
  const int64_t lanes_units = dw_lanes_units(p);
  auto fwd_general = [&](float* out) { fwd_flat_block<1, 12>(p, co_pad, xp, w, out, 0, pixels, 0, tail, chunk); };
  auto fwd_sliding = [&](float* out) { fwd_slide_block(p, co_pad, xp, w, out, 0, pixels, 0, tail, chunk); };
  auto dw_general = [&](float* out) {
    std::memset(out, 0, wn * 4);
    dw_flat(p, units, xp, g, out, rb.data(), 0, d.rows(), 0, units.count);
  };
  auto dw_lanes_form = [&](float* out) {
    std::memset(out, 0, wn * 4);
    dw_lanes(p, xp, g, out, rb.data(), 0, d.rows(), 0, lanes_units);
  };
  fwd_general(y); fwd_sliding(y2); dw_general(dw); dw_lanes_form(dw2);
  std::printf("%ldx%ldx%ld %ld->%ld: largest difference forward %.3g, weight gradient %.3g\n", (long)depth,
              (long)hw, (long)hw, (long)ci, (long)co, max_diff(y, y2, yn), max_diff(dw, dw2, wn));
  const int reps = std::max<int>(3, static_cast<int>(2e9 / flops));
  auto time = [&](auto f, float* out) {
    const double t0 = now();
    for (int k = 0; k < reps; ++k) f(out);
    return (now() - t0) / reps;
  };
  for (int round = 0; round < 4; ++round) {
    const double fa = time(fwd_general, y), fb = time(fwd_sliding, y2), wa = time(dw_general, dw),
                 wb = time(dw_lanes_form, dw2);
    std::printf("forward general %.3f ms (%.0f GFLOP/s), sliding %.3f ms (%.0f) | weight gradient general "
                "%.3f ms (%.0f), lanes %.3f ms (%.0f)\n", fa * 1e3, flops / fa / 1e9, fb * 1e3, flops / fb / 1e9,
                wa * 1e3, flops / wa / 1e9, wb * 1e3, flops / wb / 1e9);
  }
}
