// Direct 2-D and 3-D convolution kernels for XLA:CPU, called from JAX through the FFI
// (jaxseg/ops/cpu/build.py compiles this file with the machine's C++ compiler
// on first use and registers the handlers).
//
// What they compute (channels-last, float32, strides (sd, sh, sw), pads before
// (pd, ph, pw); the pads after follow from the output size; taps outside the
// image count as zeros; a 2-D conv is the case depth 1, sd = 1, pd = 0):
//   forward  y[n, z, i, x, o] = sum_{kz, kh, kw, c} xin[n, z*sd + kz - pd, i*sh + kh - ph, x*sw + kw - pw, c]
//                                                   w[kz, kh, kw, c, o]
//   weights  dw[kz, kh, kw, c, o] = sum_{n, z, i, x} xin[n, z*sd + kz - pd, i*sh + kh - ph, x*sw + kw - pw, c]
//                                                   dy[n, z, i, x, o]
// For stride 1 the input gradient is the forward with the kernel flipped, its
// channel axes swapped and the pads mirrored: `InputGrad` flips the kernel and
// runs the forward; direct.py passes it the mirrored pads (and the stride
// phases of a strided conv). A "kernel row" is a pair (kz, kh); an output row
// is (n, z, i).
//
// Why: XLA:CPU runs the U-Net's full-resolution 16-32-channel convs at
// 57-99 GFLOP/s forward+backward on this kind of machine, far from its GEMM
// rate; output channels in vector lanes (16 floats a vector) and a strip of
// output pixels in registers reach it. For fixed kh, the (kw, c) taps of one
// output pixel are contiguous in memory ((x*sw + kw) * C + c), so both kernels
// run one flat loop over j = kw * C + c.
//
// Both handlers first make the pads explicit (a zero-padded copy of the
// input, unless no tap falls outside): the forward then runs strips of
// output pixels that cross rows, and the weight gradient loops over pixels
// with no edge cases. The forward passes over the kernel once per strip, so
// the narrow deep layers of a 3-D U-Net (8 or 16 pixels a row, 2 of them
// edges) paid up to twice their work in edge strips before. The weight
// gradient is cut among threads by rows (partial sums) when its kernel is
// small next to the data, else by kernel entries (no partial sums).
//
// Layers with at most 16 output channels take other register tiles (one vector of output channels
// would need a broadcast per multiply-add): the forward in strips of one row where a broadcast input
// value feeds the three kernel columns, the weight gradient with input channels in the lanes.
// Transposed convs whose kernel equals the stride (up-convs) have a forward of their own that
// writes each stride phase's rows in place.
//
// Also here: the tile transforms of Winograd F(4x4, 3x3) and batched matrix
// products (the forward and weight-gradient kernels as 1x1 convs), which
// jaxseg/ops/cpu/winograd.py combines into 3x3 (and space-to-depth 5x5/2) convs;
// and 3-D Winograd F(2x2, 3x3) over the in-plane taps, whose depth taps are a
// (3, 1, 1) conv on these kernels (jaxseg/ops/cpu/winograd3d.py): its
// transforms and products as separate handlers, and fused band by band.
//
// Threads: the work is cut into parts; XLA's intra-op thread pool runs
// helpers, and the calling thread claims parts too, so a call finishes even if
// no pool thread is free (no waiting on a task that has not started).

#include <algorithm>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));

inline v16 load(const float* p) { return *reinterpret_cast<const v16u*>(p); }
inline void store(float* p, v16 v) { *reinterpret_cast<v16u*>(p) = v; }
inline v16 splat(float s) { return v16{s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s}; }
// The first n < 16 lanes (the last block of a channel count that is not a multiple of 16).
#if defined(__AVX512F__)
inline v16 load_n(const float* p, int64_t n) { return (v16)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p); }
inline void store_n(float* p, v16 v, int64_t n) { _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v); }
#else
inline v16 load_n(const float* p, int64_t n) {
  v16 v = v16{};
  for (int64_t i = 0; i < n; ++i) v[i] = p[i];
  return v;
}
inline void store_n(float* p, v16 v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = v[i];
}
#endif

// The 16 * CV channels at p into dv (the last vector `tail` < 16 channels if TAIL).
template <int CV, bool TAIL>
inline void load_channels(const float* p, int64_t tail, v16* dv) {
  _Pragma("GCC unroll 32")
  for (int v = 0; v < CV; ++v) dv[v] = (TAIL && v == CV - 1) ? load_n(p + 16 * v, tail) : load(p + 16 * v);
}

// Adds the accumulators of gn <= G taps to dw's rows at out (row stride co; the last vector holds
// `tail` < 16 channels if tail > 0).
template <int CV, int G>
inline void add_into_dw(float* out, int64_t co, int64_t gn, int64_t tail, const v16 (*acc)[CV]) {
  for (int g = 0; g < gn; ++g)
    _Pragma("GCC unroll 32")
    for (int v = 0; v < CV; ++v) {
      float* o = out + g * co + 16 * v;
      if (tail > 0 && v == CV - 1) store_n(o, load_n(o, tail) + acc[g][v], tail);
      else store(o, load(o) + acc[g][v]);
    }
}

// x: (n, d, h, w, ci); output (n, od, oh, ow, co); kernel (kd, kh, kw, ci, co);
// strides sd, sh, sw; the pads before (pd, ph, pw) place output pixel (z, i, x)
// at input (z * sd - pd, i * sh - ph, x * sw - pw); the pads after follow from
// the output size. 2-D: d = od = kd = 1, sd = 1, pd = 0.
struct Dims {
  int64_t n, h, w, ci, oh, ow, co, kh, kw, sh, sw, ph, pw;
  int64_t d = 1, od = 1, kd = 1, sd = 1, pd = 0;
  // The input plane (row of w * ci floats) that output row r = (n, z, i) reads for kernel row
  // (kz, kh), or -1 outside the image.
  inline int64_t in_row(int64_t r, int64_t kz, int64_t khi) const {
    const int64_t i = r % oh, nz = r / oh, z = nz % od, n = nz / od;
    const int64_t iz = z * sd + kz - pd, ih = i * sh + khi - ph;
    if (iz < 0 || iz >= d || ih < 0 || ih >= h) return -1;
    return (n * d + iz) * h + ih;
  }
  int64_t rows() const { return n * od * oh; }
};

// Output pixels [x_lo, x_hi) of a row whose every tap column is inside the image.
inline void interior(const Dims& d, int64_t* x_lo, int64_t* x_hi) {
  int64_t lo = (d.pw + d.sw - 1) / d.sw;
  int64_t hi = d.w - d.kw + d.pw >= 0 ? (d.w - d.kw + d.pw) / d.sw + 1 : 0;
  lo = std::min(lo, d.ow);
  *x_lo = lo;
  *x_hi = std::max(lo, std::min(hi, d.ow));
}

// ---------------------------------------------------------------- forward
// P output pixels from x0 on, output channels [o0, o0 + 16 * CV) (the last
// vector holding `tail` < 16 channels if tail > 0), taps j in [j_lo, j_hi) of
// each kernel row (j = kw * ci + c). The kernel wk has co_pad >= co columns,
// zero past co, so whole vectors load.
template <int CV, int P>
inline void fwd_strip(const Dims& d, int64_t co_pad, const float* xin, const float* wk, float* yrow,
                      int64_t r, int64_t x0, int64_t o0, int64_t tail, int64_t j_lo, int64_t j_hi) {
  v16 acc[P][CV];
  _Pragma("GCC unroll 32")
  for (int p = 0; p < P; ++p)
    _Pragma("GCC unroll 32")
    for (int v = 0; v < CV; ++v) acc[p][v] = v16{};
  const int64_t kwc = d.kw * d.ci, step = d.sw * d.ci;
  for (int64_t kr = 0; kr < d.kd * d.kh; ++kr) {
    const int64_t row = d.in_row(r, kr / d.kh, kr % d.kh);
    if (row < 0) continue;
    const float* xr = xin + (row * d.w + x0 * d.sw - d.pw) * d.ci;  // tap j of pixel x0 + p: xr[p * step + j]
    const float* wr = wk + kr * kwc * co_pad + o0;
    for (int64_t j = j_lo; j < j_hi; ++j) {
      v16 wv[CV];
      _Pragma("GCC unroll 32")
      for (int v = 0; v < CV; ++v) wv[v] = load(wr + j * co_pad + 16 * v);
      _Pragma("GCC unroll 32")
      for (int p = 0; p < P; ++p) {
        const v16 b = splat(xr[p * step + j]);
        _Pragma("GCC unroll 32")
        for (int v = 0; v < CV; ++v) acc[p][v] += b * wv[v];
      }
    }
  }
  _Pragma("GCC unroll 32")
  for (int p = 0; p < P; ++p) {
    float* out = yrow + (x0 + p) * d.co + o0;
    _Pragma("GCC unroll 32")
    for (int v = 0; v < CV; ++v) {
      if (tail > 0 && v == CV - 1) store_n(out + 16 * v, acc[p][v], tail);
      else store(out + 16 * v, acc[p][v]);
    }
  }
}

template <int CV, int P>
void fwd_row_block(const Dims& d, int64_t co_pad, const float* xin, const float* wk, float* y, int64_t r,
                   int64_t o0, int64_t tail) {
  float* yrow = y + r * d.ow * d.co;
  const int64_t kwc = d.kw * d.ci;
  int64_t lo, hi;
  interior(d, &lo, &hi);
  auto edge = [&](int64_t x) {  // only the taps whose column is inside the image
    const int64_t c0 = x * d.sw - d.pw;
    const int64_t j_lo = std::max<int64_t>(0, -c0) * d.ci, j_hi = std::min<int64_t>(d.kw, d.w - c0) * d.ci;
    fwd_strip<CV, 1>(d, co_pad, xin, wk, yrow, r, x, o0, tail, j_lo, std::max(j_lo, j_hi));
  };
  for (int64_t x = 0; x < lo; ++x) edge(x);
  int64_t x = lo;
  for (; x + P <= hi; x += P) fwd_strip<CV, P>(d, co_pad, xin, wk, yrow, r, x, o0, tail, 0, kwc);
  for (; x + 4 <= hi; x += 4) fwd_strip<CV, 4>(d, co_pad, xin, wk, yrow, r, x, o0, tail, 0, kwc);
  for (; x < hi; ++x) fwd_strip<CV, 1>(d, co_pad, xin, wk, yrow, r, x, o0, tail, 0, kwc);
  for (x = hi; x < d.ow; ++x) edge(x);
}

void fwd_rows(const Dims& d, int64_t co_pad, const float* xin, const float* wk, float* y, int64_t r0,
              int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    // Blocks of up to 64 output channels; the last holds the remainder.
    for (int64_t o0 = 0; o0 < d.co; o0 += 64) {
      const int64_t rem = std::min<int64_t>(64, d.co - o0), tail = rem % 16;
      if (rem > 48) fwd_row_block<4, 6>(d, co_pad, xin, wk, y, r, o0, tail);
      else if (rem > 32) fwd_row_block<3, 6>(d, co_pad, xin, wk, y, r, o0, tail);
      else if (rem > 16) fwd_row_block<2, 6>(d, co_pad, xin, wk, y, r, o0, tail);
      else fwd_row_block<1, 12>(d, co_pad, xin, wk, y, r, o0, tail);
    }
  }
}

// ---------------------------------------------------------------- padded input, flat strips
// The conv on its input with the pads made explicit: (n, d', h', w', ci) with d' = (od - 1) * sd + kd
// (and so on), zeros outside the image. Every tap of every output pixel then lies inside, at a fixed
// offset from the pixel's corner, so a strip of output pixels may cross rows and needs no edge
// cases: the edge pixels of a narrow layer (2 of 16 per row) would otherwise each cost a pass over
// the kernel of their own.
Dims padded_dims(const Dims& d) {
  Dims p = d;
  p.d = (d.od - 1) * d.sd + d.kd;
  p.h = (d.oh - 1) * d.sh + d.kh;
  p.w = (d.ow - 1) * d.sw + d.kw;
  p.pd = p.ph = p.pw = 0;
  return p;
}

// Whether the input must be copied to have every tap inside (else it is used as it is).
bool needs_padding(const Dims& d) {
  const Dims p = padded_dims(d);
  return d.pd != 0 || d.ph != 0 || d.pw != 0 || p.d > d.d || p.h > d.h || p.w > d.w;
}

// Rows [r0, r1) (r = (n, z', i')) of the padded input p of x (dims d).
void pad_rows(const Dims& d, const Dims& p, const float* x, float* xp, int64_t r0, int64_t r1) {
  const int64_t c = d.ci, lo = std::min(std::max<int64_t>(d.pw, 0), p.w),
                hi = std::max(lo, std::min(p.w, d.w + d.pw));
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t hp = r % p.h, t = r / p.h, zp = t % p.d, n = t / p.d;
    const int64_t z = zp - d.pd, h = hp - d.ph;
    float* out = xp + r * p.w * c;
    if (z < 0 || z >= d.d || h < 0 || h >= d.h) {
      std::memset(out, 0, p.w * c * sizeof(float));
      continue;
    }
    const float* src = x + ((n * d.d + z) * d.h + h) * d.w * c;
    std::memset(out, 0, lo * c * sizeof(float));
    std::memcpy(out + lo * c, src + (lo - d.pw) * c, (hi - lo) * c * sizeof(float));
    std::memset(out + hi * c, 0, (p.w - hi) * c * sizeof(float));
  }
}

// Buffers for padded inputs and partial sums, kept between calls (fresh pages cost a fault each)
// and handed to one call at a time (XLA may run two custom calls at once).
class BufferPool {
 public:
  struct Buf {
    std::unique_ptr<float[]> p;
    size_t n = 0;
  };
  Buf take(size_t n) {
    {
      std::lock_guard<std::mutex> g(mu_);
      size_t best = free_.size();
      for (size_t i = 0; i < free_.size(); ++i)
        if (free_[i].n >= n && (best == free_.size() || free_[i].n < free_[best].n)) best = i;
      if (best < free_.size()) {
        Buf b = std::move(free_[best]);
        free_.erase(free_.begin() + best);
        return b;
      }
    }
    Buf b;
    b.p.reset(new float[n]);
    b.n = n;
    return b;
  }
  void give(Buf b) {
    std::lock_guard<std::mutex> g(mu_);
    free_.push_back(std::move(b));
    if (free_.size() > 4) {  // keep the four largest
      auto smallest = std::min_element(free_.begin(), free_.end(), [](const Buf& a, const Buf& b) { return a.n < b.n; });
      free_.erase(smallest);
    }
  }

 private:
  std::mutex mu_;
  std::vector<Buf> free_;
};

BufferPool& buffers() {
  static BufferPool* pool = new BufferPool();  // never destroyed: calls may run at exit
  return *pool;
}

// P output pixels with input corners xs[p] and outputs ys[p] (at channel o0), output channels
// [o0, o0 + 16 * CV) (the last vector `tail` < 16 channels if tail > 0), kernel rows [k0, k1) on a
// padded input (d: no pads); `add` adds to the outputs (a later chunk of kernel rows).
template <int CV, int P>
inline void fwd_flat_strip(const Dims& d, int64_t co_pad, const float* const* xs, float* const* ys,
                           const float* wk, int64_t o0, int64_t tail, int64_t k0, int64_t k1, bool add) {
  v16 acc[P][CV];
  _Pragma("GCC unroll 32")
  for (int p = 0; p < P; ++p)
    _Pragma("GCC unroll 32")
    for (int v = 0; v < CV; ++v) {
      if (!add) acc[p][v] = v16{};
      else if (tail > 0 && v == CV - 1) acc[p][v] = load_n(ys[p] + 16 * v, tail);
      else acc[p][v] = load(ys[p] + 16 * v);
    }
  const int64_t kwc = d.kw * d.ci;
  for (int64_t kr = k0; kr < k1; ++kr) {
    const int64_t off = ((kr / d.kh) * d.h + kr % d.kh) * d.w * d.ci;
    const float* xr[P];
    _Pragma("GCC unroll 32")
    for (int p = 0; p < P; ++p) xr[p] = xs[p] + off;
    const float* wr = wk + kr * kwc * co_pad + o0;
    for (int64_t j = 0; j < kwc; ++j) {
      v16 wv[CV];
      _Pragma("GCC unroll 32")
      for (int v = 0; v < CV; ++v) wv[v] = load(wr + j * co_pad + 16 * v);
      _Pragma("GCC unroll 32")
      for (int p = 0; p < P; ++p) {
        const v16 b = splat(xr[p][j]);
        _Pragma("GCC unroll 32")
        for (int v = 0; v < CV; ++v) acc[p][v] += b * wv[v];
      }
    }
  }
  _Pragma("GCC unroll 32")
  for (int p = 0; p < P; ++p)
    _Pragma("GCC unroll 32")
    for (int v = 0; v < CV; ++v) {
      if (tail > 0 && v == CV - 1) store_n(ys[p] + 16 * v, acc[p][v], tail);
      else store(ys[p] + 16 * v, acc[p][v]);
    }
}

// A strip of np <= P pixels: the template for exactly np.
template <int CV, int P>
inline void fwd_flat_strip_n(int64_t np, const Dims& d, int64_t co_pad, const float* const* xs,
                             float* const* ys, const float* wk, int64_t o0, int64_t tail, int64_t k0,
                             int64_t k1, bool add) {
  if (np == P) fwd_flat_strip<CV, P>(d, co_pad, xs, ys, wk, o0, tail, k0, k1, add);
  else if constexpr (P > 1) fwd_flat_strip_n<CV, P - 1>(np, d, co_pad, xs, ys, wk, o0, tail, k0, k1, add);
}

// The input corner of output pixel q = ((n * od + z) * oh + i) * ow + x on a padded input (d: no
// pads), stepped pixel by pixel without divisions (a strip's pointers cost a few adds, not the
// four divisions per pixel that outweigh the work of a one-channel layer's strip).
struct PixelCursor {
  const Dims& d;
  const float* xin;
  int64_t x, i, z, n;
  const float* row = nullptr;
  PixelCursor(const Dims& dims, const float* in, int64_t q) : d(dims), xin(in) {
    x = q % d.ow;
    const int64_t r = q / d.ow, nz = r / d.oh;
    i = r % d.oh;
    z = nz % d.od;
    n = nz / d.od;
    set_row();
  }
  void set_row() { row = xin + ((n * d.d + z * d.sd) * d.h + i * d.sh) * d.w * d.ci; }
  const float* corner() const { return row + x * d.sw * d.ci; }
  void next() {
    if (++x < d.ow) return;
    x = 0;
    if (++i == d.oh) {
      i = 0;
      if (++z == d.od) {
        z = 0;
        ++n;
      }
    }
    set_row();
  }
};

// Output pixels [q0, q1) (q = ((n * od + z) * oh + i) * ow + x) of the conv on a padded input (d: no
// pads), in strips of P pixels that may cross rows; output channels [o0, o0 + 16 * CV); kernel rows
// in chunks of `chunk` (their 64-column block fits in `FlatTiling::chunk_bytes`: it stays in L2
// while every strip of the part passes over it; a later chunk adds to the outputs).
template <int CV, int P>
void fwd_flat_block(const Dims& d, int64_t co_pad, const float* xin, const float* wk, float* y, int64_t q0,
                    int64_t q1, int64_t o0, int64_t tail, int64_t chunk) {
  const int64_t kr_n = d.kd * d.kh;
  for (int64_t k0 = 0; k0 < kr_n; k0 += chunk) {
    const int64_t k1 = std::min(kr_n, k0 + chunk);
    PixelCursor cur(d, xin, q0);
    for (int64_t q = q0; q < q1; q += P) {
      const int64_t np = std::min<int64_t>(P, q1 - q);
      const float* xs[P];
      float* ys[P];
      for (int64_t p = 0; p < np; ++p, cur.next()) {
        xs[p] = cur.corner();
        ys[p] = y + (q + p) * d.co + o0;
      }
      fwd_flat_strip_n<CV, P>(np, d, co_pad, xs, ys, wk, o0, tail, k0, k1, k0 > 0);
    }
  }
}

// ---------------------------------------------------------------- forward, sliding strips
// The forward of a 3-wide, stride-1 kernel with at most 16 output channels (one vector): P output
// pixels of one row, x0 the first one's input corner, y0 its output (at channel o0). Input pixel q
// of the strip feeds output pixels q, q - 1 and q - 2 through kernel columns 0, 1 and 2, so one
// broadcast of x[q, c] serves three multiply-adds; a strip of independent pixels (fwd_flat_strip)
// needs a broadcast per multiply-add when there is one vector of output channels, and ran at 65-82%
// of the FMA peak on 16-output-channel layers (experiments/bench/RESULTS.md, session 10).
template <int P>
inline void fwd_slide_strip(const Dims& d, int64_t co_pad, const float* x0, float* y0, const float* wk,
                            int64_t o0, int64_t tail, int64_t k0, int64_t k1, bool add) {
  v16 acc[P];
  _Pragma("GCC unroll 32")
  for (int p = 0; p < P; ++p) {
    if (!add) acc[p] = v16{};
    else if (tail > 0) acc[p] = load_n(y0 + p * d.co, tail);
    else acc[p] = load(y0 + p * d.co);
  }
  const int64_t ci = d.ci;
  for (int64_t kr = k0; kr < k1; ++kr) {
    const float* xr = x0 + ((kr / d.kh) * d.h + kr % d.kh) * d.w * ci;  // x[q, c] = xr[q * ci + c]
    const float* wr = wk + kr * 3 * ci * co_pad + o0;                    // w[k, c] = wr[(k * ci + c) * co_pad]
    for (int64_t c = 0; c < ci; ++c) {
      const v16 w0 = load(wr + c * co_pad), w1 = load(wr + (ci + c) * co_pad),
                w2 = load(wr + (2 * ci + c) * co_pad);
      _Pragma("GCC unroll 32")
      for (int q = 0; q < P + 2; ++q) {
        const v16 b = splat(xr[q * ci + c]);
        if (q < P) acc[q] += b * w0;
        if (q >= 1 && q - 1 < P) acc[q - 1] += b * w1;
        if (q >= 2) acc[q - 2] += b * w2;
      }
    }
  }
  _Pragma("GCC unroll 32")
  for (int p = 0; p < P; ++p) {
    if (tail > 0) store_n(y0 + p * d.co, acc[p], tail);
    else store(y0 + p * d.co, acc[p]);
  }
}

// Whether fwd_slide_block computes the conv d with the output channels of block o0 (a 3-wide,
// stride-1 kernel, one vector of output channels).
inline bool slides(const Dims& d, int64_t rem) { return d.kw == 3 && d.sw == 1 && rem <= 16; }

// Output pixels [q0, q1) of the conv on a padded input (d: no pads; slides(d, .)), output channels
// [o0, o0 + 16), in strips of 24, 16, 8, 4, 2 or 1 pixels within a row; kernel rows in chunks as in
// fwd_flat_block.
void fwd_slide_block(const Dims& d, int64_t co_pad, const float* xin, const float* wk, float* y, int64_t q0,
                     int64_t q1, int64_t o0, int64_t tail, int64_t chunk) {
  const int64_t kr_n = d.kd * d.kh;
  for (int64_t k0 = 0; k0 < kr_n; k0 += chunk) {
    const int64_t k1 = std::min(kr_n, k0 + chunk);
    const bool add = k0 > 0;
    PixelCursor cur(d, xin, q0);
    for (int64_t q = q0; q < q1;) {
      const float* x0 = cur.corner();
      const int64_t n = std::min(q1 - q, d.ow - cur.x);
      float* y0 = y + q * d.co + o0;
      int64_t p = 0;
      for (; p + 24 <= n; p += 24) fwd_slide_strip<24>(d, co_pad, x0 + p * d.ci, y0 + p * d.co, wk, o0, tail, k0, k1, add);
      if (p + 16 <= n) { fwd_slide_strip<16>(d, co_pad, x0 + p * d.ci, y0 + p * d.co, wk, o0, tail, k0, k1, add); p += 16; }
      if (p + 8 <= n) { fwd_slide_strip<8>(d, co_pad, x0 + p * d.ci, y0 + p * d.co, wk, o0, tail, k0, k1, add); p += 8; }
      if (p + 4 <= n) { fwd_slide_strip<4>(d, co_pad, x0 + p * d.ci, y0 + p * d.co, wk, o0, tail, k0, k1, add); p += 4; }
      if (p + 2 <= n) { fwd_slide_strip<2>(d, co_pad, x0 + p * d.ci, y0 + p * d.co, wk, o0, tail, k0, k1, add); p += 2; }
      if (p < n) fwd_slide_strip<1>(d, co_pad, x0 + p * d.ci, y0 + p * d.co, wk, o0, tail, k0, k1, add);
      q += n;
      for (int64_t i = 0; i < n; ++i) cur.next();
    }
  }
}

struct FlatTiling {
  int64_t chunk_bytes = 256 << 10;  // kernel rows per chunk: their 64-column block in about this much
};

// Output pixels [q0, q1), the blocks of 64 output channels [b0, b1).
void fwd_flat(const Dims& d, int64_t co_pad, const float* xin, const float* wk, float* y, int64_t q0, int64_t q1,
              int64_t b0, int64_t b1, const FlatTiling& t) {
  const int64_t kr_bytes = d.kw * d.ci * 64 * 4;
  const int64_t chunk = std::max<int64_t>(1, t.chunk_bytes / std::max<int64_t>(kr_bytes, 1));
  for (int64_t o0 = 64 * b0; o0 < std::min(d.co, 64 * b1); o0 += 64) {
    const int64_t rem = std::min<int64_t>(64, d.co - o0), tail = rem % 16;
    if (rem > 48) fwd_flat_block<4, 6>(d, co_pad, xin, wk, y, q0, q1, o0, tail, chunk);
    else if (rem > 32) fwd_flat_block<3, 8>(d, co_pad, xin, wk, y, q0, q1, o0, tail, chunk);
    else if (rem > 16) fwd_flat_block<2, 12>(d, co_pad, xin, wk, y, q0, q1, o0, tail, chunk);
    else if (slides(d, rem)) fwd_slide_block(d, co_pad, xin, wk, y, q0, q1, o0, tail, chunk);
    else fwd_flat_block<1, 12>(d, co_pad, xin, wk, y, q0, q1, o0, tail, chunk);
  }
}

// ---------------------------------------------------------------- weights
// Output rows per tile of the weight gradient: their input and cotangent rows fill about half of L2,
// so every tap group and channel block passes over a tile from cache.
inline int64_t dw_row_tile(const Dims& d) {
  const int64_t row_bytes = (d.w * d.ci + d.ow * d.co) * 4;
  return std::max<int64_t>(1, (512 << 10) / std::max<int64_t>(row_bytes, 1));
}

// Taps j in [j0, j0 + G) of kernel row kr = (kz, kh), output channels [o0, o0 + 16 * CV)
// (the last vector `tail` < 16 channels if tail > 0), summed over output rows
// [r0, r1): added into dw (kd, kh, kw, ci, co).
template <int CV, int G, bool TAIL>
inline void dw_group(const Dims& d, const float* xin, const float* dy, float* dw, int64_t r0, int64_t r1,
                     int64_t kr, int64_t j0, int64_t gn, int64_t o0, int64_t tail) {
  v16 acc[G][CV];
  _Pragma("GCC unroll 32")
  for (int g = 0; g < G; ++g)
    _Pragma("GCC unroll 32")
    for (int v = 0; v < CV; ++v) acc[g][v] = v16{};
  int64_t lo, hi;
  interior(d, &lo, &hi);
  const int64_t step = d.sw * d.ci;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t row = d.in_row(r, kr / d.kh, kr % d.kh);
    if (row < 0) continue;
    const float* xr = xin + (row * d.w - d.pw) * d.ci + j0;  // tap j0 + g of pixel x: xr[x * step + g]
    const float* dyr = dy + r * d.ow * d.co + o0;
    for (int64_t x = lo; x < hi; ++x) {
      v16 dv[CV];
      load_channels<CV, TAIL>(dyr + x * d.co, tail, dv);
      const float* xp = xr + x * step;
      _Pragma("GCC unroll 32")
      for (int g = 0; g < G; ++g) {
        if (g >= gn) break;
        const v16 b = splat(xp[g]);
        _Pragma("GCC unroll 32")
        for (int v = 0; v < CV; ++v) acc[g][v] += b * dv[v];
      }
    }
    // Edge pixels: only the taps whose column is inside the image.
    for (int64_t x = 0; x < d.ow; ++x) {
      if (x == lo) x = std::max(x, hi);
      if (x >= d.ow) break;
      v16 dv[CV];
      load_channels<CV, TAIL>(dyr + x * d.co, tail, dv);
      const float* xp = xr + x * step;
      for (int g = 0; g < gn; ++g) {
        const int64_t col = x * d.sw + (j0 + g) / d.ci - d.pw;
        if (col < 0 || col >= d.w) continue;
        const v16 b = splat(xp[g]);
        _Pragma("GCC unroll 32")
        for (int v = 0; v < CV; ++v) acc[g][v] += b * dv[v];
      }
    }
  }
  add_into_dw<CV, G>(dw + (kr * d.kw * d.ci + j0) * d.co + o0, d.co, gn, tail, acc);
}

template <int CV, int G>
inline void dw_taps(const Dims& d, const float* xin, const float* dy, float* dw, int64_t r0, int64_t r1,
                    int64_t kr, int64_t o0, int64_t tail) {
  const int64_t kwc = d.kw * d.ci;
  for (int64_t j = 0; j < kwc; j += G) {
    const int64_t gn = std::min<int64_t>(G, kwc - j);
    if (tail > 0) dw_group<CV, G, true>(d, xin, dy, dw, r0, r1, kr, j, gn, o0, tail);
    else dw_group<CV, G, false>(d, xin, dy, dw, r0, r1, kr, j, gn, o0, tail);
  }
}

// Output rows [r0, r1): for each kernel row, in tiles of rows whose input row
// and cotangent fill about half of L2, so that every tap group and channel
// block passes over them from cache with a long inner loop (the accumulators'
// round trip to dw, in L3 for a large kernel, happens once per tile).
void dw_rows(const Dims& d, const float* xin, const float* dy, float* dw, int64_t r0, int64_t r1) {
  const int64_t tile = dw_row_tile(d);
  for (int64_t kr = 0; kr < d.kd * d.kh; ++kr) {
    for (int64_t t0 = r0; t0 < r1; t0 += tile) {
      const int64_t t1 = std::min(r1, t0 + tile);
      for (int64_t o0 = 0; o0 < d.co; o0 += 64) {
        const int64_t rem = std::min<int64_t>(64, d.co - o0), tail = rem % 16;
        if (rem > 48) dw_taps<4, 6>(d, xin, dy, dw, t0, t1, kr, o0, tail);
        else if (rem > 32) dw_taps<3, 8>(d, xin, dy, dw, t0, t1, kr, o0, tail);
        else if (rem > 16) dw_taps<2, 12>(d, xin, dy, dw, t0, t1, kr, o0, tail);
        else dw_taps<1, 16>(d, xin, dy, dw, t0, t1, kr, o0, tail);
      }
    }
  }
}

// Weight gradient on a padded input (d: no pads). Its work is cut into units u = (kernel row kr,
// block of 64 output channels, group of G taps j = kw * ci + c); a unit over output rows [r0, r1) adds
// sum_{r, x} xin[row_base[r] + off(kr) + x * sw * ci + j] dy[r, x, o] to dw[kr, j, o]. row_base[r] is
// the input corner of output row r, so the pixel loop has no divisions and no edge cases. It is one
// loop over the pixels of all the rows, which steps to the next row's corner at a row's end: with a
// loop per row the compiler kept the accumulators on the stack between rows, and the 8-pixel rows of
// deep 3-D layers paid a round trip of all of them every 8 pixels (the weight gradient took 15% longer;
// experiments/bench/RESULTS.md, session 9).
template <int CV, int G, bool TAIL>
inline void dw_flat_group(const Dims& d, const float* xin, const float* dy, float* dw, const int64_t* row_base,
                          int64_t r0, int64_t r1, int64_t kr, int64_t j0, int64_t gn, int64_t o0, int64_t tail) {
  if (r0 >= r1) return;
  v16 acc[G][CV];
  _Pragma("GCC unroll 32")
  for (int g = 0; g < G; ++g)
    _Pragma("GCC unroll 32")
    for (int v = 0; v < CV; ++v) acc[g][v] = v16{};
  const float* xo = xin + ((kr / d.kh) * d.h + kr % d.kh) * d.w * d.ci + j0;
  const int64_t step = d.sw * d.ci, ow = d.ow;
  const float* dyq = dy + r0 * ow * d.co + o0;
  const float* xp = xo + row_base[r0];
  int64_t r = r0, x = 0;
  for (int64_t q = r0 * ow; q < r1 * ow; ++q, dyq += d.co) {
    v16 dv[CV];
    load_channels<CV, TAIL>(dyq, tail, dv);
    _Pragma("GCC unroll 32")
    for (int g = 0; g < G; ++g) {
      if (g >= gn) break;
      const v16 b = splat(xp[g]);
      _Pragma("GCC unroll 32")
      for (int v = 0; v < CV; ++v) acc[g][v] += b * dv[v];
    }
    xp += step;
    if (++x == ow) {
      x = 0;
      if (++r < r1) xp = xo + row_base[r];
    }
  }
  add_into_dw<CV, G>(dw + (kr * d.kw * d.ci + j0) * d.co + o0, d.co, gn, tail, acc);
}

// Register tiles of the weight gradient by the output channels left in a block of 64.
constexpr int dw_group_size(int cv) { return cv == 4 ? 6 : cv == 3 ? 8 : cv == 2 ? 12 : 16; }

struct DwUnits {
  int64_t blocks, groups_per_row;  // per kernel row: blocks of 64 output channels x groups of taps
  int64_t group;                   // taps a group: the widest block's (all but the last have 64 channels)
  int64_t count;
};

DwUnits dw_units(const Dims& d) {
  DwUnits u;
  u.blocks = (d.co + 63) / 64;
  u.group = dw_group_size(static_cast<int>(std::min<int64_t>(4, (std::min<int64_t>(64, d.co) + 15) / 16)));
  u.groups_per_row = (d.kw * d.ci + u.group - 1) / u.group;
  u.count = d.kd * d.kh * u.blocks * u.groups_per_row;
  return u;
}

template <int CV>
inline void dw_flat_unit_cv(const Dims& d, const float* xin, const float* dy, float* dw, const int64_t* rb,
                            int64_t r0, int64_t r1, int64_t kr, int64_t j0, int64_t j1, int64_t o0, int64_t tail) {
  constexpr int G = dw_group_size(CV);
  const int64_t gn = std::min<int64_t>(G, j1 - j0);
  if (gn <= 0) return;
  if (tail > 0) dw_flat_group<CV, G, true>(d, xin, dy, dw, rb, r0, r1, kr, j0, gn, o0, tail);
  else dw_flat_group<CV, G, false>(d, xin, dy, dw, rb, r0, r1, kr, j0, gn, o0, tail);
}

// Units [u0, u1) over output rows [r0, r1), in tiles of rows whose input and cotangent rows fill about
// half of L2 (every unit passes over a tile from cache).
void dw_flat(const Dims& d, const DwUnits& units, const float* xin, const float* dy, float* dw,
             const int64_t* rb, int64_t r0, int64_t r1, int64_t u0, int64_t u1) {
  const int64_t tile = dw_row_tile(d);
  for (int64_t t0 = r0; t0 < r1; t0 += tile) {
    const int64_t t1 = std::min(r1, t0 + tile);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t jg = u % units.groups_per_row, t = u / units.groups_per_row, b = t % units.blocks,
                    kr = t / units.blocks;
      const int64_t o0 = 64 * b, rem = std::min<int64_t>(64, d.co - o0), tail = rem % 16;
      const int cv = static_cast<int>((rem + 15) / 16);
      // A narrower last block takes the unit's taps in groups of its own (larger) size.
      const int64_t j_lo = jg * units.group, j_hi = std::min<int64_t>(j_lo + units.group, d.kw * d.ci);
      const int64_t g_own = dw_group_size(cv);
      for (int64_t j = j_lo; j < j_hi; j += g_own) {
        if (cv == 4) dw_flat_unit_cv<4>(d, xin, dy, dw, rb, t0, t1, kr, j, j_hi, o0, tail);
        else if (cv == 3) dw_flat_unit_cv<3>(d, xin, dy, dw, rb, t0, t1, kr, j, j_hi, o0, tail);
        else if (cv == 2) dw_flat_unit_cv<2>(d, xin, dy, dw, rb, t0, t1, kr, j, j_hi, o0, tail);
        else dw_flat_unit_cv<1>(d, xin, dy, dw, rb, t0, t1, kr, j, j_hi, o0, tail);
      }
    }
  }
}

// ---------------------------------------------------------------- weights, input channels in lanes
// The weight gradient of a 3-wide kernel with at most 16 output channels and input channels in whole
// vectors: the 16 input channels [c0, c0 + 16) of the three taps of kernel row kr in vector lanes,
// NB output channels [o0, o0 + NB) broadcast from dy, so one broadcast serves three multiply-adds.
// With the output channels in lanes (dw_flat_group) one vector of them needs a broadcast of x per
// multiply-add, and the weight gradient of 16-output-channel layers ran at 40-70% of the FMA peak
// (experiments/bench/RESULTS.md, sessions 9 and 10). Pixel loop, rows and accumulation into dw as in
// dw_flat_group.
template <int NB>
inline void dw_lanes_group(const Dims& d, const float* xin, const float* dy, float* dw, const int64_t* row_base,
                           int64_t r0, int64_t r1, int64_t kr, int64_t c0, int64_t o0) {
  if (r0 >= r1) return;
  v16 acc[3][NB];
  _Pragma("GCC unroll 32")
  for (int k = 0; k < 3; ++k)
    _Pragma("GCC unroll 32")
    for (int o = 0; o < NB; ++o) acc[k][o] = v16{};
  const int64_t ci = d.ci, step = d.sw * ci, ow = d.ow;
  const float* xo = xin + ((kr / d.kh) * d.h + kr % d.kh) * d.w * ci + c0;
  const float* dyq = dy + r0 * ow * d.co + o0;
  const float* xp = xo + row_base[r0];
  int64_t r = r0, x = 0;
  for (int64_t q = r0 * ow; q < r1 * ow; ++q, dyq += d.co) {
    const v16 x0 = load(xp), x1 = load(xp + ci), x2 = load(xp + 2 * ci);
    _Pragma("GCC unroll 32")
    for (int o = 0; o < NB; ++o) {
      const v16 b = splat(dyq[o]);
      acc[0][o] += x0 * b;
      acc[1][o] += x1 * b;
      acc[2][o] += x2 * b;
    }
    xp += step;
    if (++x == ow) {
      x = 0;
      if (++r < r1) xp = xo + row_base[r];
    }
  }
  // acc[k][o] lane l is dw[kr, k, c0 + l, o0 + o].
  float* out = dw + (kr * 3 * ci + c0) * d.co + o0;
  for (int k = 0; k < 3; ++k) {
    alignas(64) float lanes[NB][16];
    _Pragma("GCC unroll 32")
    for (int o = 0; o < NB; ++o) store(lanes[o], acc[k][o]);
    for (int l = 0; l < 16; ++l)
      for (int o = 0; o < NB; ++o) out[(k * ci + l) * d.co + o] += lanes[o][l];
  }
}

// Whether the weight gradient of d (on a padded input) takes dw_lanes.
inline bool dw_in_lanes(const Dims& d) { return d.kw == 3 && d.co <= 16 && d.ci % 16 == 0; }

// Units of dw_lanes: (kernel row, 16 input channels, 8 output channels).
inline int64_t dw_lanes_units(const Dims& d) { return d.kd * d.kh * (d.ci / 16) * ((d.co + 7) / 8); }

// Units [u0, u1) over output rows [r0, r1), in row tiles as in dw_flat.
void dw_lanes(const Dims& d, const float* xin, const float* dy, float* dw, const int64_t* rb, int64_t r0,
              int64_t r1, int64_t u0, int64_t u1) {
  const int64_t tile = dw_row_tile(d);
  const int64_t ob = (d.co + 7) / 8, cb = d.ci / 16;
  for (int64_t t0 = r0; t0 < r1; t0 += tile) {
    const int64_t t1 = std::min(r1, t0 + tile);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t o0 = 8 * (u % ob), c0 = 16 * ((u / ob) % cb), kr = u / (ob * cb);
      switch (std::min<int64_t>(8, d.co - o0)) {  // the exact count: a broadcast past co could read past dy
        case 8: dw_lanes_group<8>(d, xin, dy, dw, rb, t0, t1, kr, c0, o0); break;
        case 7: dw_lanes_group<7>(d, xin, dy, dw, rb, t0, t1, kr, c0, o0); break;
        case 6: dw_lanes_group<6>(d, xin, dy, dw, rb, t0, t1, kr, c0, o0); break;
        case 5: dw_lanes_group<5>(d, xin, dy, dw, rb, t0, t1, kr, c0, o0); break;
        case 4: dw_lanes_group<4>(d, xin, dy, dw, rb, t0, t1, kr, c0, o0); break;
        case 3: dw_lanes_group<3>(d, xin, dy, dw, rb, t0, t1, kr, c0, o0); break;
        case 2: dw_lanes_group<2>(d, xin, dy, dw, rb, t0, t1, kr, c0, o0); break;
        default: dw_lanes_group<1>(d, xin, dy, dw, rb, t0, t1, kr, c0, o0);
      }
    }
  }
}

// ---------------------------------------------------------------- threads
struct Job {
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  int64_t parts = 0;
};

// Runs body(part) for part in [0, parts) on the calling thread and up to
// (pool threads - 1) helpers; returns when all parts are done.
//
// XLA's intra-op pool, not threads of our own: helper threads that spin
// between calls (as PyTorch's OpenMP threads do) ended isolated calls'
// two-mode times, but made whole train steps 10-15% slower (they compete with
// XLA's own work; experiments/bench/RESULTS.md, session 8).
template <typename Body>
void parallel_parts(ffi::ThreadPool pool, int64_t parts, Body body) {
  auto job = std::make_shared<Job>();
  job->parts = parts;
  auto shared_body = std::make_shared<Body>(std::move(body));
  auto work = [job, shared_body]() {
    for (;;) {
      const int64_t p = job->next.fetch_add(1);
      if (p >= job->parts) return;
      (*shared_body)(p);
      job->done.fetch_add(1);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), parts) - 1;
  for (int64_t i = 0; i < helpers; ++i) {
    auto task = work;
    pool.Schedule(std::move(task));
  }
  work();
  while (job->done.load() < parts) std::this_thread::yield();
}

int64_t num_parts(int64_t rows, int64_t threads) {
  return std::max<int64_t>(1, std::min<int64_t>(rows, 4 * std::max<int64_t>(threads, 1)));
}

// Dims of a conv from its input, output and kernel shapes (4-D: 2-D conv, 5-D: 3-D conv), or
// false when they do not fit together.
template <typename A, typename B, typename C>
bool conv_dims(const A& xd, const B& yd, const C& kd, int64_t sd, int64_t sh, int64_t sw, int64_t pd,
               int64_t ph, int64_t pw, Dims* out) {
  const size_t r = xd.size();
  if ((r != 4 && r != 5) || yd.size() != r || kd.size() != r || kd[r - 2] != xd[r - 1] || yd[0] != xd[0])
    return false;
  const size_t o = r - 4;  // 1 for 3-D: the depth axis comes first
  Dims d{xd[0], xd[1 + o], xd[2 + o], xd[3 + o], yd[1 + o], yd[2 + o], yd[3 + o], kd[0 + o], kd[1 + o],
         sh, sw, ph, pw};
  if (o) {
    d.d = xd[1]; d.od = yd[1]; d.kd = kd[0]; d.sd = sd; d.pd = pd;
  }
  *out = d;
  return true;
}

// The input of the conv d with every tap inside: x itself (*pd = d), or a padded copy in *buf
// (*pd = padded_dims(d)), made in parallel rows.
const float* padded_input(ffi::ThreadPool pool, const Dims& d, const float* x, BufferPool::Buf* buf, Dims* pd) {
  if (!needs_padding(d)) {
    *pd = d;
    return x;
  }
  const Dims p = padded_dims(d);
  *pd = p;
  const int64_t rows = p.n * p.d * p.h;
  *buf = buffers().take(static_cast<size_t>(rows * p.w * p.ci));
  float* out = buf->p.get();
  const int64_t parts = num_parts(rows, pool.num_threads());
  parallel_parts(pool, parts, [=](int64_t i) { pad_rows(d, p, x, out, rows * i / parts, rows * (i + 1) / parts); });
  return out;
}

// The conv d of x with the kernel wk (co_pad >= co columns, zero past co) into y, on every thread.
void forward_on(ffi::ThreadPool pool, const Dims& d, const float* x, const float* wk, int64_t co_pad, float* y) {
  BufferPool::Buf buf;
  Dims dp;
  const float* xp = padded_input(pool, d, x, &buf, &dp);
  // Parts: pixel ranges x blocks of 64 output channels, block by block (a thread's next part is
  // likely in the block whose kernel its L2 holds). Splitting the blocks too halves a part of a
  // 128-channel layer, so the threads' last parts end closer together.
  const int64_t pixels = d.rows() * d.ow, ranges = num_parts(d.rows(), pool.num_threads()),
                blocks = (d.co + 63) / 64, parts = ranges * blocks;
  const FlatTiling tiling;
  parallel_parts(pool, parts, [=](int64_t p) {
    const int64_t b = p / ranges, i = p % ranges;
    fwd_flat(dp, co_pad, xp, wk, y, pixels * i / ranges, pixels * (i + 1) / ranges, b, b + 1, tiling);
  });
  if (buf.p) buffers().give(std::move(buf));
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> wk,
                   ffi::ResultBuffer<ffi::F32> y, int64_t sd, int64_t sh, int64_t sw, int64_t pd, int64_t ph,
                   int64_t pw) {
  auto xd = x.dimensions(), kd = wk.dimensions(), yd = y->dimensions();
  Dims d;
  if (!conv_dims(xd, yd, kd, sd, sh, sw, pd, ph, pw, &d) || kd[kd.size() - 1] < d.co ||
      kd[kd.size() - 1] % 16 != 0)
    return ffi::Error::InvalidArgument("jaxseg conv forward: inconsistent shapes");
  forward_on(pool, d, x.typed_data(), wk.typed_data(), kd[kd.size() - 1], y->typed_data());
  return ffi::Error::Success();
}

// out[k * os + i] = in[i * is + k] for i, k < 16 (a 16 x 16 block transposed).
inline void transpose16(const float* in, int64_t is, float* out, int64_t os) {
#if defined(__AVX512F__)
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(in + i * is);
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]),
                  c = _mm512_castps_pd(t[4 * i + 1]), e = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, e));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, e));
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + j + 4], 0x88);
      t[8 * i + j + 4] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + j + 4], 0xdd);
    }
  for (int j = 0; j < 8; ++j) {
    _mm512_storeu_ps(out + j * os, _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88));
    _mm512_storeu_ps(out + (j + 8) * os, _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd));
  }
#else
  for (int k = 0; k < 16; ++k)
    for (int i = 0; i < 16; ++i) out[k * os + i] = in[i * is + k];
#endif
}

// dst (cols, dst_stride) = src (rows, cols; row stride src_stride) transposed, zero columns
// [rows, dst_stride) of dst.
void transpose_matrix(const float* src, int64_t rows, int64_t cols, int64_t src_stride, float* dst,
                      int64_t dst_stride) {
  const int64_t r16 = rows / 16 * 16, c16 = cols / 16 * 16;
  for (int64_t c0 = 0; c0 < c16; c0 += 16)
    for (int64_t r0 = 0; r0 < r16; r0 += 16) transpose16(src + r0 * src_stride + c0, src_stride, dst + c0 * dst_stride + r0, dst_stride);
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t r = c < c16 ? r16 : 0; r < rows; ++r) dst[c * dst_stride + r] = src[r * src_stride + c];
    std::memset(dst + c * dst_stride + rows, 0, (dst_stride - rows) * sizeof(float));
  }
}

// Taps [t0, t1) of the input-gradient kernel: wt[taps - 1 - t, o, c] = w[t, c, o] (c < ci; zero for
// c in [ci, ci_pad)), w (taps, ci, co), wt (taps, co, ci_pad). In 16 x 16 blocks transposed in
// registers: element by element the copy took 0.24 ms for a 3x3x3 128 x 128 kernel, a sixth of the
// input gradient it serves.
void flip_swap_taps(const float* w, float* wt, int64_t taps, int64_t ci, int64_t co, int64_t ci_pad, int64_t t0,
                    int64_t t1) {
  for (int64_t t = t0; t < t1; ++t) transpose_matrix(w + t * ci * co, ci, co, co, wt + (taps - 1 - t) * co * ci_pad, ci_pad);
}

// The input gradient of a stride-1 conv with kernel w (kd, kh, kw, ci, co): the forward conv of dy
// with w flipped and its channel axes swapped; the attributes are that conv's (stride 1, the pads
// mirrored, as direct.py computes them). The flipped kernel is made here, in parallel, into a pooled
// buffer: as an XLA transpose before the call it took 0.3 ms of a 1.5 ms input gradient of a
// 128 -> 128 channel 3-D layer (experiments/bench/RESULTS.md, session 9).
ffi::Error InputGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                     ffi::ResultBuffer<ffi::F32> dx, int64_t sd, int64_t sh, int64_t sw, int64_t pd, int64_t ph,
                     int64_t pw) {
  auto gd = dy.dimensions(), wd = w.dimensions(), xd = dx->dimensions();
  const size_t r = wd.size();
  std::vector<int64_t> kt(wd.begin(), wd.end());
  if (r >= 2) std::swap(kt[r - 2], kt[r - 1]);
  Dims d;
  if (r < 4 || !conv_dims(gd, xd, kt, sd, sh, sw, pd, ph, pw, &d) || wd[r - 2] != d.co || sd != 1 || sh != 1 ||
      sw != 1)
    return ffi::Error::InvalidArgument("jaxseg conv input gradient: inconsistent shapes");
  const int64_t taps = d.kd * d.kh * d.kw, ci = d.co, co = d.ci, ci_pad = (ci + 15) / 16 * 16;
  BufferPool::Buf wbuf = buffers().take(static_cast<size_t>(taps * co * ci_pad));
  float* wt = wbuf.p.get();
  const float* wp = w.typed_data();
  // A small kernel (a 2-D U-Net's 3x3 x 16 x 32) is flipped on the calling thread: waking a helper
  // would cost more than the copy.
  const int64_t parts = taps * ci * co < (1 << 16) ? 1 : std::min<int64_t>(taps, 4 * std::max<int64_t>(pool.num_threads(), 1));
  parallel_parts(pool, parts, [=](int64_t p) {
    flip_swap_taps(wp, wt, taps, ci, co, ci_pad, taps * p / parts, taps * (p + 1) / parts);
  });
  forward_on(pool, d, dy.typed_data(), wt, ci_pad, dx->typed_data());
  buffers().give(std::move(wbuf));
  return ffi::Error::Success();
}

ffi::Error WeightGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                      ffi::ResultBuffer<ffi::F32> dw, int64_t sd, int64_t sh, int64_t sw, int64_t pd, int64_t ph,
                      int64_t pw) {
  auto xd = x.dimensions(), gd = dy.dimensions(), wd = dw->dimensions();
  Dims d;
  if (!conv_dims(xd, gd, wd, sd, sh, sw, pd, ph, pw, &d) || wd[wd.size() - 1] != d.co)
    return ffi::Error::InvalidArgument("jaxseg conv weight gradient: inconsistent shapes");
  BufferPool::Buf buf;
  Dims dp;
  const float* xp = padded_input(pool, d, x.typed_data(), &buf, &dp);
  const float* dyp = dy.typed_data();
  float* out = dw->typed_data();
  const int64_t size = d.kd * d.kh * d.kw * d.ci * d.co, rows = d.rows();
  std::vector<int64_t> row_base(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = r % dp.oh, nz = r / dp.oh, z = nz % dp.od, n = nz / dp.od;
    row_base[r] = ((n * dp.d + z * dp.sd) * dp.h + i * dp.sh) * dp.w * dp.ci;
  }
  const int64_t* rb = row_base.data();
  const DwUnits units = dw_units(dp);
  const bool lanes = dw_in_lanes(dp);
  const int64_t count = lanes ? dw_lanes_units(dp) : units.count;
  auto run = [=](float* into, int64_t r0, int64_t r1, int64_t u0, int64_t u1) {
    if (lanes) dw_lanes(dp, xp, dyp, into, rb, r0, r1, u0, u1);
    else dw_flat(dp, units, xp, dyp, into, rb, r0, r1, u0, u1);
  };
  const int64_t threads = std::max<int64_t>(pool.num_threads(), 1);
  const int64_t data_bytes = (rows * dp.ow * dp.co + dp.n * dp.d * dp.h * dp.w * dp.ci) * 4;
  if (size * 4 * 4 * threads > data_bytes && count >= 4 * threads) {
    // A kernel that is large next to the data (deep layers): the units are cut among the parts,
    // each over all rows, each entry of dw written by one part (no partial sums to add).
    std::memset(out, 0, size * sizeof(float));
    const int64_t parts = std::min<int64_t>(count, 16 * threads);
    parallel_parts(pool, parts, [=](int64_t p) { run(out, 0, rows, count * p / parts, count * (p + 1) / parts); });
  } else {
    // Else the rows are cut among the parts, each with a partial sum, added in part order so the
    // result does not depend on timing. Parts for load balance, but no more than one per thread for a
    // kernel over 64 KiB: each part zeroes, fills and adds a partial sum of its size.
    const int64_t parts = size * 4 <= (64 << 10) ? num_parts(rows, threads) : std::min<int64_t>(rows, threads);
    BufferPool::Buf partial = buffers().take(static_cast<size_t>(parts * size));
    float* pp = partial.p.get();
    parallel_parts(pool, parts, [=](int64_t p) {
      std::memset(pp + p * size, 0, size * sizeof(float));
      run(pp + p * size, rows * p / parts, rows * (p + 1) / parts, 0, count);
    });
    std::memcpy(out, pp, size * sizeof(float));
    for (int64_t p = 1; p < parts; ++p)
      for (int64_t i = 0; i < size; ++i) out[i] += pp[p * size + i];
    buffers().give(std::move(partial));
  }
  if (buf.p) buffers().give(std::move(buf));
  return ffi::Error::Success();
}


// ---------------------------------------------------------------- transposed conv, kernel = stride
// z[n, z*sd + a, i*sh + b, x*sw + c, o] = sum_k y[n, z, i, x, k] w[a, b, c, o, k]: a transposed conv
// whose kernel equals its stride (the U-Net's 2x2(x2)/2 up-convs), so every output has one tap. For
// each leading phase (a, b) it is a GEMM of y (pixels, C_y) with wk[a, b] (C_y, sw * C_z: the
// columns (c, o), zero past sw * C_z up to co_pad), whose row for input pixel (z, i, x) is the
// sw * C_z contiguous outputs (z*sd + a, i*sh + b, x*sw .. x*sw + sw - 1): fwd_flat_strip on a 1x1
// "conv" with one output pointer per pixel writes the phases in place, with no interleaving copy.
// Parts: (phase, pixel range, 64-column block).
ffi::Error TransposeForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> y, ffi::Buffer<ffi::F32> wk,
                            ffi::ResultBuffer<ffi::F32> z, int64_t sd, int64_t sh, int64_t sw, int64_t pd,
                            int64_t ph, int64_t pw) {
  auto yd = y.dimensions(), kd = wk.dimensions(), zd = z->dimensions();
  const size_t r = yd.size();
  if ((r != 4 && r != 5) || zd.size() != r || kd.size() != 3 || yd[0] != zd[0] || pd != 0 || ph != 0 ||
      pw != 0 || (r == 4 && sd != 1))
    return ffi::Error::InvalidArgument("jaxseg conv transpose: inconsistent shapes");
  const size_t o = r - 4;
  const int64_t n = yd[0], dd = o ? yd[1] : 1, hh = yd[1 + o], ww = yd[2 + o], cy = yd[3 + o], cz = zd[3 + o];
  if ((o ? zd[1] : 1) != dd * sd || zd[1 + o] != hh * sh || zd[2 + o] != ww * sw || kd[0] != sd * sh ||
      kd[1] != cy || kd[2] < sw * cz || kd[2] % 16 != 0)
    return ffi::Error::InvalidArgument("jaxseg conv transpose: inconsistent shapes");
  const int64_t co = sw * cz, co_pad = kd[2], pixels = n * dd * hh * ww, phases = sd * sh;
  Dims d{1, 1, pixels, cy, 1, pixels, co, 1, 1, 1, 1, 0, 0};  // the GEMM as a 1x1 conv
  const float* yp = y.typed_data();
  const float* wp = wk.typed_data();
  float* zp = z->typed_data();
  const int64_t ranges = num_parts(std::max<int64_t>(1, pixels / 16), pool.num_threads()),
                blocks = (co + 63) / 64;
  parallel_parts(pool, phases * ranges * blocks, [=](int64_t part) {
    const int64_t b = part % blocks, i = (part / blocks) % ranges, phase = part / (blocks * ranges);
    const int64_t pa = phase / sh, pb = phase % sh;
    const int64_t q0 = pixels * i / ranges, q1 = pixels * (i + 1) / ranges;
    const int64_t o0 = 64 * b, rem = std::min<int64_t>(64, co - o0), tail = rem % 16;
    const float* wph = wp + phase * cy * co_pad;
    // The output row start of input pixel q = ((n * dd + iz) * hh + ih) * ww + ix.
    auto out_of = [&](int64_t q) {
      const int64_t ix = q % ww, t = q / ww, ih = t % hh, t2 = t / hh, iz = t2 % dd, in = t2 / dd;
      return zp + (((in * dd * sd + iz * sd + pa) * hh * sh + ih * sh + pb) * ww * sw + ix * sw) * cz + o0;
    };
    const int64_t strip = rem > 48 ? 6 : rem > 32 ? 8 : 12;  // the register tiles of fwd_flat_block
    const float* xs[12];
    float* ys[12];
    for (int64_t q = q0; q < q1; q += strip) {
      const int64_t np = std::min<int64_t>(strip, q1 - q);
      for (int64_t p = 0; p < np; ++p) {
        xs[p] = yp + (q + p) * cy;
        ys[p] = out_of(q + p);
      }
      if (rem > 48) fwd_flat_strip_n<4, 6>(np, d, co_pad, xs, ys, wph, o0, tail, 0, 1, false);
      else if (rem > 32) fwd_flat_strip_n<3, 8>(np, d, co_pad, xs, ys, wph, o0, tail, 0, 1, false);
      else if (rem > 16) fwd_flat_strip_n<2, 12>(np, d, co_pad, xs, ys, wph, o0, tail, 0, 1, false);
      else fwd_flat_strip_n<1, 12>(np, d, co_pad, xs, ys, wph, o0, tail, 0, 1, false);
    }
  });
  return ffi::Error::Success();
}


// ---------------------------------------------------------------- Winograd F(4x4, 3x3)
// A 3x3 stride-1 conv on 6x6 input tiles at stride 4 (Lavin & Gray 2016,
// points 0, +-1, +-2, inf): y_tile = A^T [(G g G^T) . (B^T d B)] A, summed over
// input channels. The four transforms below move tiles between images and
// (36, tiles, channels) arrays, 16 channels a vector; the 36 products over
// channels are `BatchedMatmul` (forward, input gradient) and `BatchedMatmulTN`
// (weight gradient). Tile t = (n * th + ti) * tw + tj covers padded input rows
// 4 ti .. 4 ti + 5 (image row 4 ti - ph + a); outside the image counts as zero.

// out[k * os] = sum_a BT[k][a] in[a * is], k, a < 6.
inline void bt6(const v16* in, int64_t is, v16* out, int64_t os) {
  const v16 t0 = in[0], t1 = in[is], t2 = in[2 * is], t3 = in[3 * is], t4 = in[4 * is], t5 = in[5 * is];
  const v16 four = splat(4.f), five = splat(5.f), two = splat(2.f);
  out[0] = four * t0 - five * t2 + t4;
  out[os] = t3 + t4 - four * (t1 + t2);
  out[2 * os] = four * (t1 - t2) + t4 - t3;
  out[3 * os] = two * (t3 - t1) + t4 - t2;
  out[4 * os] = two * (t1 - t3) + t4 - t2;
  out[5 * os] = four * t1 - five * t3 + t5;
}
// The transpose: out[a * os] = sum_k BT[k][a] in[k * is].
inline void b6(const v16* in, int64_t is, v16* out, int64_t os) {
  const v16 i0 = in[0], i1 = in[is], i2 = in[2 * is], i3 = in[3 * is], i4 = in[4 * is], i5 = in[5 * is];
  const v16 four = splat(4.f), five = splat(5.f), two = splat(2.f);
  out[0] = four * i0;
  out[os] = four * (i2 - i1 + i5) + two * (i4 - i3);
  out[2 * os] = -five * i0 - four * (i1 + i2) - i3 - i4;
  out[3 * os] = i1 - i2 + two * (i3 - i4) - five * i5;
  out[4 * os] = i0 + i1 + i2 + i3 + i4;
  out[5 * os] = i5;
}
// out[i * os] = sum_k AT[i][k] in[k * is], i < 4, k < 6.
inline void at4(const v16* in, int64_t is, v16* out, int64_t os) {
  const v16 m0 = in[0], m1 = in[is], m2 = in[2 * is], m3 = in[3 * is], m4 = in[4 * is], m5 = in[5 * is];
  const v16 p12 = m1 + m2, d12 = m1 - m2, p34 = m3 + m4, d34 = m3 - m4;
  out[0] = m0 + p12 + p34;
  out[os] = d12 + splat(2.f) * d34;
  out[2 * os] = p12 + splat(4.f) * p34;
  out[3 * os] = d12 + splat(8.f) * d34 + m5;
}
// The transpose: out[k * os] = sum_i AT[i][k] in[i * is].
inline void a6(const v16* in, int64_t is, v16* out, int64_t os) {
  const v16 i0 = in[0], i1 = in[is], i2 = in[2 * is], i3 = in[3 * is];
  const v16 p02 = i0 + i2, p13 = i1 + i3, q02 = i0 + splat(4.f) * i2, q13 = splat(2.f) * i1 + splat(8.f) * i3;
  out[0] = i0;
  out[os] = p02 + p13;
  out[2 * os] = p02 - p13;
  out[3 * os] = q02 + q13;
  out[4 * os] = q02 - q13;
  out[5 * os] = i3;
}

struct Tiles {
  int64_t n, h, w, c, th, tw, ph, pw;  // image (n, h, w, c); th x tw tiles per image; pads before
  int64_t tiles() const { return n * th * tw; }
};

// f(n, ti, tj, tile, c0, cn) for every tile of the tile rows [r0, r1) (r = n * th + ti) and
// every block of cn <= 16 channels from c0, in order.
template <typename F>
inline void each_tile_block(const Tiles& t, int64_t r0, int64_t r1, F f) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t tj = 0; tj < t.tw; ++tj)
      for (int64_t c0 = 0; c0 < t.c; c0 += 16)
        f(r / t.th, r % t.th, tj, r * t.tw + tj, c0, std::min<int64_t>(16, t.c - c0));
}
inline v16 load_c(const float* p, int64_t cn) { return cn == 16 ? load(p) : load_n(p, cn); }
inline void store_c(float* p, v16 v, int64_t cn) {
  if (cn == 16) store(p, v);
  else store_n(p, v, cn);
}
// The 36 values of one tile and channel block of a (36, tiles, c) array.
inline void load36(const Tiles& t, const float* a, int64_t tile, int64_t c0, int64_t cn, v16* d) {
  const float* p = a + tile * t.c + c0;
  for (int k = 0; k < 36; ++k) d[k] = load_c(p + k * t.tiles() * t.c, cn);
}
inline void store36(const Tiles& t, float* a, int64_t tile, int64_t c0, int64_t cn, const v16* d) {
  float* p = a + tile * t.c + c0;
  for (int k = 0; k < 36; ++k) store_c(p + k * t.tiles() * t.c, d[k], cn);
}
// Pixel (row, col) of image n, channels from c0, or null outside the image.
template <typename T>
inline T* pixel(const Tiles& t, T* x, int64_t n, int64_t row, int64_t col, int64_t c0) {
  if (row < 0 || row >= t.h || col < 0 || col >= t.w) return nullptr;
  return x + ((n * t.h + row) * t.w + col) * t.c + c0;
}

// Image (n, h, w, c) -> v (36, tiles, c): B^T d B of every tile, tile rows [r0, r1).
void wino_input_rows(const Tiles& t, const float* x, float* v, int64_t r0, int64_t r1) {
  each_tile_block(t, r0, r1, [&](int64_t n, int64_t ti, int64_t tj, int64_t tile, int64_t c0, int64_t cn) {
    v16 d[36], s[36];
    for (int a = 0; a < 6; ++a)
      for (int b = 0; b < 6; ++b) {
        const float* p = pixel(t, x, n, 4 * ti + a - t.ph, 4 * tj + b - t.pw, c0);
        d[a * 6 + b] = p ? load_c(p, cn) : v16{};
      }
    for (int b = 0; b < 6; ++b) bt6(d + b, 6, s + b, 6);          // rows
    for (int k = 0; k < 6; ++k) bt6(s + 6 * k, 1, d + 6 * k, 1);  // columns
    store36(t, v, tile, c0, cn, d);
  });
}

// dv (36, tiles, c) -> dx (n, h, w, c): the transpose of wino_input_rows, for images [n0, n1)
// (tiles overlap by two rows and columns: one image's tiles are added in order by one thread).
void wino_input_t_images(const Tiles& t, const float* dv, float* dx, int64_t n0, int64_t n1) {
  std::memset(dx + n0 * t.h * t.w * t.c, 0, (n1 - n0) * t.h * t.w * t.c * sizeof(float));
  each_tile_block(t, n0 * t.th, n1 * t.th, [&](int64_t n, int64_t ti, int64_t tj, int64_t tile, int64_t c0, int64_t cn) {
    v16 d[36], s[36];
    load36(t, dv, tile, c0, cn, d);
    for (int k = 0; k < 6; ++k) b6(d + 6 * k, 1, s + 6 * k, 1);
    for (int b = 0; b < 6; ++b) b6(s + b, 6, d + b, 6);
    for (int a = 0; a < 6; ++a)
      for (int b = 0; b < 6; ++b)
        if (float* p = pixel(t, dx, n, 4 * ti + a - t.ph, 4 * tj + b - t.pw, c0))
          store_c(p, load_c(p, cn) + d[a * 6 + b], cn);
  });
}

// m (36, tiles, c) -> y (n, h, w, c) (h <= 4 th, w <= 4 tw): A^T m A, tile rows [r0, r1).
void wino_output_rows(const Tiles& t, const float* m, float* y, int64_t r0, int64_t r1) {
  each_tile_block(t, r0, r1, [&](int64_t n, int64_t ti, int64_t tj, int64_t tile, int64_t c0, int64_t cn) {
    v16 d[36], s[24], o[16];
    load36(t, m, tile, c0, cn, d);
    for (int b = 0; b < 6; ++b) at4(d + b, 6, s + b, 6);      // rows: s[i * 6 + b]
    for (int i = 0; i < 4; ++i) at4(s + 6 * i, 1, o + 4 * i, 1);
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j)
        if (float* p = pixel(t, y, n, 4 * ti + i, 4 * tj + j, c0)) store_c(p, o[i * 4 + j], cn);
  });
}

// dy (n, h, w, c) -> dm (36, tiles, c): the transpose of wino_output_rows, tile rows [r0, r1).
void wino_output_t_rows(const Tiles& t, const float* dy, float* dm, int64_t r0, int64_t r1) {
  each_tile_block(t, r0, r1, [&](int64_t n, int64_t ti, int64_t tj, int64_t tile, int64_t c0, int64_t cn) {
    v16 o[16], s[24], d[36];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        const float* p = pixel(t, dy, n, 4 * ti + i, 4 * tj + j, c0);
        o[i * 4 + j] = p ? load_c(p, cn) : v16{};
      }
    for (int i = 0; i < 4; ++i) a6(o + 4 * i, 1, s + 6 * i, 1);  // s[i * 6 + b]
    for (int b = 0; b < 6; ++b) a6(s + b, 6, d + b, 6);
    store36(t, dm, tile, c0, cn, d);
  });
}

// Batched products through the conv kernels as 1x1 convs on one row of p pixels.
Dims gemm_dims(int64_t p, int64_t c, int64_t k) { return Dims{1, 1, p, c, 1, p, k, 1, 1, 1, 1, 0, 0}; }

ffi::Error BatchedMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                         ffi::ResultBuffer<ffi::F32> y) {
  auto ad = a.dimensions(), bd = b.dimensions(), yd = y->dimensions();
  if (ad.size() != 3 || bd.size() != 3 || yd.size() != 3 || bd[0] != ad[0] || yd[0] != ad[0] ||
      bd[1] != ad[2] || yd[1] != ad[1] || bd[2] < yd[2] || bd[2] % 16 != 0)
    return ffi::Error::InvalidArgument("jaxseg batched matmul: inconsistent shapes");
  const int64_t nb = ad[0], p = ad[1], c = ad[2], k = yd[2], kp = bd[2];
  const Dims d = gemm_dims(p, c, k);
  const float* ap = a.typed_data();
  const float* bp = b.typed_data();
  float* yp = y->typed_data();
  parallel_parts(pool, nb, [=](int64_t i) { fwd_rows(d, kp, ap + i * p * c, bp + i * c * kp, yp + i * p * k, 0, 1); });
  return ffi::Error::Success();
}

ffi::Error BatchedMatmulTN(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> g,
                           ffi::ResultBuffer<ffi::F32> y) {
  auto ad = a.dimensions(), gd = g.dimensions(), yd = y->dimensions();
  if (ad.size() != 3 || gd.size() != 3 || yd.size() != 3 || gd[0] != ad[0] || yd[0] != ad[0] ||
      gd[1] != ad[1] || yd[1] != ad[2] || yd[2] != gd[2])
    return ffi::Error::InvalidArgument("jaxseg batched matmul TN: inconsistent shapes");
  const int64_t nb = ad[0], p = ad[1], c = ad[2], k = gd[2];
  const Dims d = gemm_dims(p, c, k);
  const float* ap = a.typed_data();
  const float* gp = g.typed_data();
  float* yp = y->typed_data();
  parallel_parts(pool, nb, [=](int64_t i) {
    std::memset(yp + i * c * k, 0, c * k * sizeof(float));
    dw_rows(d, ap + i * p * c, gp + i * p * k, yp + i * c * k, 0, 1);
  });
  return ffi::Error::Success();
}

// The transforms: image-shaped and (36, tiles, c)-shaped operands are checked against the attributes.
ffi::Error WinoTransform(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> in, ffi::ResultBuffer<ffi::F32> out,
                         int64_t th, int64_t tw, int64_t ph, int64_t pw, int64_t kind) {
  auto id = in.dimensions(), od = out->dimensions();
  const bool to_tiles = kind == 0 || kind == 3;   // 0 input, 1 input^T, 2 output, 3 output^T
  auto img = to_tiles ? id : od;
  auto til = to_tiles ? od : id;
  if (img.size() != 4 || til.size() != 3 || til[0] != 36 || til[1] != img[0] * th * tw || til[2] != img[3] ||
      ((kind == 2 || kind == 3) && (img[1] > 4 * th || img[2] > 4 * tw)))
    return ffi::Error::InvalidArgument("jaxseg winograd transform: inconsistent shapes");
  const Tiles t{img[0], img[1], img[2], img[3], th, tw, ph, pw};
  const float* ip = in.typed_data();
  float* op = out->typed_data();
  if (kind == 1) {
    const int64_t parts = std::max<int64_t>(1, t.n);
    parallel_parts(pool, parts, [=](int64_t i) { wino_input_t_images(t, ip, op, i, i + 1); });
    return ffi::Error::Success();
  }
  const int64_t rows = t.n * t.th, parts = num_parts(rows, pool.num_threads());
  parallel_parts(pool, parts, [=](int64_t i) {
    const int64_t r0 = rows * i / parts, r1 = rows * (i + 1) / parts;
    if (kind == 0) wino_input_rows(t, ip, op, r0, r1);
    else if (kind == 2) wino_output_rows(t, ip, op, r0, r1);
    else wino_output_t_rows(t, ip, op, r0, r1);
  });
  return ffi::Error::Success();
}


// ---------------------------------------------------------------- Winograd F(2x2, 3x3) kernels of 3-D convs
// A 3x3x3 stride-1 conv as F(2x2, 3x3) over the in-plane taps and a direct sum over the depth taps
// (jaxseg/ops/cpu/winograd3d.py): u = G g G^T for each depth tap kz, G = [[1, 0, 0],
// [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]], 16 channels a vector.

// out[k * os] = sum_i G[k][i] in[i * is], k < 4, i < 3.
inline void g4(const v16* in, int64_t is, v16* out, int64_t os) {
  const v16 a = in[0], b = in[is], c = in[2 * is], h = splat(0.5f);
  out[0] = a;
  out[os] = h * (a + b + c);
  out[2 * os] = h * (a - b + c);
  out[3 * os] = c;
}
// The transpose: out[i * os] = sum_k G[k][i] in[k * is], i < 3.
inline void gt3(const v16* in, int64_t is, v16* out, int64_t os) {
  const v16 p = in[0], q = in[is], r = in[2 * is], s = in[3 * is], h = splat(0.5f);
  out[0] = p + h * (q + r);
  out[os] = h * (q - r);
  out[2 * os] = h * (q + r) + s;
}

// Rows [r0, r1) (r = kz * ci + c) of u (16, 3 * ci, co_pad) from w (3, 3, 3, ci, co): u[4a + b, r] =
// sum_{i, j} G[a][i] G[b][j] w[kz, i, j, c]; zero columns past co.
void wino2_kernel_rows(const float* w, float* u, int64_t ci, int64_t co, int64_t co_pad, int64_t r0, int64_t r1) {
  const int64_t rows = 3 * ci;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t kz = r / ci, c = r % ci;
    for (int64_t o0 = 0; o0 < co_pad; o0 += 16) {
      const int64_t n = std::min<int64_t>(16, co - o0);
      v16 g[9], t[12], o[16];
      for (int k = 0; k < 9; ++k) {
        const float* p = w + ((kz * 9 + k) * ci + c) * co + o0;
        g[k] = n >= 16 ? load(p) : n > 0 ? load_n(p, n) : v16{};
      }
      for (int j = 0; j < 3; ++j) g4(g + j, 3, t + j, 3);          // t[a * 3 + j]
      for (int a = 0; a < 4; ++a) g4(t + 3 * a, 1, o + 4 * a, 1);  // o[a * 4 + b]
      for (int k = 0; k < 16; ++k) store(u + (k * rows + r) * co_pad + o0, o[k]);
    }
  }
}

// Rows [r0, r1) (r = kz * ci + c) of dw (3, 3, 3, ci, co) from du (16, 3 * ci, co): the transpose of
// wino2_kernel_rows, dw[kz, i, j, c] = sum_{a, b} G[a][i] G[b][j] du[4a + b, r].
void wino2_kernel_t_rows(const float* du, float* dw, int64_t ci, int64_t co, int64_t r0, int64_t r1) {
  const int64_t rows = 3 * ci;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t kz = r / ci, c = r % ci;
    for (int64_t o0 = 0; o0 < co; o0 += 16) {
      const int64_t n = std::min<int64_t>(16, co - o0);
      v16 d[16], t[12], g[9];
      for (int k = 0; k < 16; ++k) d[k] = load_c(du + (k * rows + r) * co + o0, n);
      for (int b = 0; b < 4; ++b) gt3(d + b, 4, t + b, 4);          // t[i * 4 + b]
      for (int i = 0; i < 3; ++i) gt3(t + 4 * i, 1, g + 3 * i, 1);  // g[i * 3 + j]
      for (int k = 0; k < 9; ++k) store_c(dw + ((kz * 9 + k) * ci + c) * co + o0, g[k], n);
    }
  }
}

// kind 0: w (3, 3, 3, ci, co) -> u (16, 3 ci, co_pad); kind 1: w -> ut (16, 3 co, ci_pad), ut[k, 2 - kz,
// o, c] = u[k, kz, c, o]: each position's depth taps flipped and their channel axes swapped, the
// kernel of the input gradient's depth conv; kind 2: du (16, 3 ci, co) -> dw (3, 3, 3, ci, co). _pad:
// the next multiple of 16, zero columns (the product kernels load whole vectors).
ffi::Error Wino2Kernel(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> in, ffi::ResultBuffer<ffi::F32> out,
                       int64_t kind) {
  auto id = in.dimensions(), od = out->dimensions();
  auto k333 = [](decltype(id) d) { return d.size() == 5 && d[0] == 3 && d[1] == 3 && d[2] == 3; };
  const float* ip = in.typed_data();
  float* op = out->typed_data();
  const int64_t threads = std::max<int64_t>(pool.num_threads(), 1);
  if (kind == 0 || kind == 1) {
    if (!k333(id) || od.size() != 3 || od[0] != 16)
      return ffi::Error::InvalidArgument("jaxseg winograd3d kernel: inconsistent shapes");
    const int64_t ci = id[3], co = id[4], rows = 3 * ci, co_pad = (co + 15) / 16 * 16, ci_pad = (ci + 15) / 16 * 16;
    if ((kind == 0 && (od[1] != rows || od[2] != co_pad)) || (kind == 1 && (od[1] != 3 * co || od[2] != ci_pad)))
      return ffi::Error::InvalidArgument("jaxseg winograd3d kernel: inconsistent shapes");
    BufferPool::Buf buf;
    float* u = op;
    if (kind == 1) {
      buf = buffers().take(static_cast<size_t>(16 * rows * co_pad));
      u = buf.p.get();
    }
    const int64_t parts = num_parts(rows, threads);
    parallel_parts(pool, parts, [=](int64_t p) {
      wino2_kernel_rows(ip, u, ci, co, co_pad, rows * p / parts, rows * (p + 1) / parts);
    });
    if (kind == 1) {
      parallel_parts(pool, 16, [=](int64_t k) {
        for (int64_t kz = 0; kz < 3; ++kz)
          transpose_matrix(u + (k * 3 + kz) * ci * co_pad, ci, co, co_pad, op + (k * 3 + 2 - kz) * co * ci_pad, ci_pad);
      });
      buffers().give(std::move(buf));
    }
    return ffi::Error::Success();
  }
  if (kind != 2 || id.size() != 3 || id[0] != 16 || !k333(od) || id[1] != 3 * od[3] || id[2] != od[4])
    return ffi::Error::InvalidArgument("jaxseg winograd3d kernel: inconsistent shapes");
  const int64_t ci = od[3], co = od[4], rows = 3 * ci, parts = num_parts(rows, threads);
  parallel_parts(pool, parts, [=](int64_t p) {
    wino2_kernel_t_rows(ip, op, ci, co, rows * p / parts, rows * (p + 1) / parts);
  });
  return ffi::Error::Success();
}


// The tiles of a 3-D volume (n, d, h, w, c) for F(2x2, 3x3) with SAME pads: tile (ti, tj) of a plane
// covers rows 2 ti - 1 .. 2 ti + 2 and columns 2 tj - 1 .. 2 tj + 2 (zeros outside); th x tw tiles a
// plane. The transformed input (and the transformed cotangent of the output) is stored with a plane
// of zeros before and after each volume, (16, n * (d + 2) * th * tw, c): the depth taps of the
// products are then a (3, 1, 1) conv with no pads over each position's planes of tiles.
struct Tiles3 {
  int64_t n, d, h, w, c, th, tw;
  int64_t tiles() const { return n * d * th * tw; }
  int64_t padded_tiles() const { return n * (d + 2) * th * tw; }
};
// out[k * os] = sum_a BT[k][a] in[a * is] (BT = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]).
inline void bt4(const v16* in, int64_t is, v16* out, int64_t os) {
  const v16 i0 = in[0], i1 = in[is], i2 = in[2 * is], i3 = in[3 * is];
  out[0] = i0 - i2;
  out[os] = i1 + i2;
  out[2 * os] = i2 - i1;
  out[3 * os] = i1 - i3;
}
// The transpose: out[a * os] = sum_k BT[k][a] in[k * is].
inline void b4(const v16* in, int64_t is, v16* out, int64_t os) {
  const v16 i0 = in[0], i1 = in[is], i2 = in[2 * is], i3 = in[3 * is];
  out[0] = i0;
  out[os] = i1 - i2 + i3;
  out[2 * os] = i1 + i2 - i0;
  out[3 * os] = -i3;
}
// out[i * os] = sum_k AT[i][k] in[k * is] (AT = [[1, 1, 1, 0], [0, 1, -1, -1]]).
inline void at2(const v16* in, int64_t is, v16* out, int64_t os) {
  const v16 m0 = in[0], m1 = in[is], m2 = in[2 * is], m3 = in[3 * is];
  out[0] = m0 + m1 + m2;
  out[os] = m1 - m2 - m3;
}
// The transpose: out[k * os] = sum_i AT[i][k] in[i * is].
inline void a4(const v16* in, int64_t is, v16* out, int64_t os) {
  const v16 i0 = in[0], i1 = in[is];
  out[0] = i0;
  out[os] = i0 + i1;
  out[2 * os] = i0 - i1;
  out[3 * os] = -i1;
}
template <typename T>
inline T* pixel3(const Tiles3& t, T* x, int64_t plane, int64_t row, int64_t col, int64_t c0) {
  if (row < 0 || row >= t.h || col < 0 || col >= t.w) return nullptr;
  return x + ((plane * t.h + row) * t.w + col) * t.c + c0;
}

// Where the tiles of a band of tile rows go: position k, plane z of the layout, tile j of the band
// (j = (ti - ti0) * tw + tj) at base + k * ks + z * ps + j * c. The products' operands are bands with
// every tile row of a volume (and the volume's planes one after another, ps = th * tw * c); the fused
// conv (Wino3Conv*) keeps a band of a few tile rows in a buffer of its own.
struct Band {
  int64_t n, ti0, ti1;  // volume n, tile rows [ti0, ti1)
  int64_t ks, ps;
};

// f(z, ti, tj, j, c0, cn) for every plane z of the volume, tile (ti, tj) of the band (j its index in
// the band) and block of cn <= 16 channels from c0, in order.
template <typename F>
inline void each_band_tile_block(const Tiles3& t, const Band& b, F f) {
  for (int64_t z = 0; z < t.d; ++z)
    for (int64_t ti = b.ti0; ti < b.ti1; ++ti)
      for (int64_t tj = 0; tj < t.tw; ++tj)
        for (int64_t c0 = 0; c0 < t.c; c0 += 16)
          f(z, ti, tj, (ti - b.ti0) * t.tw + tj, c0, std::min<int64_t>(16, t.c - c0));
}

// Planes 0 and d + 1 of a depth-padded band: zeros (the depth conv's pads).
void zero_pad_planes(const Tiles3& t, const Band& b, float* v) {
  const int64_t len = (b.ti1 - b.ti0) * t.tw * t.c;
  for (int k = 0; k < 16; ++k)
    for (int64_t z : {int64_t{0}, t.d + 1}) std::memset(v + k * b.ks + z * b.ps, 0, len * sizeof(float));
}

// B^T d B of the band's tiles of x (n, d, h, w, c), plane z at plane z + 1 of v (depth-padded).
void wino3_input_band(const Tiles3& t, const float* x, const Band& b, float* v) {
  zero_pad_planes(t, b, v);
  each_band_tile_block(t, b, [&](int64_t z, int64_t ti, int64_t tj, int64_t j, int64_t c0, int64_t cn) {
    v16 dd[16], s[16];
    for (int a = 0; a < 4; ++a)
      for (int e = 0; e < 4; ++e) {
        const float* p = pixel3(t, x, b.n * t.d + z, 2 * ti + a - 1, 2 * tj + e - 1, c0);
        dd[a * 4 + e] = p ? load_c(p, cn) : v16{};
      }
    for (int e = 0; e < 4; ++e) bt4(dd + e, 4, s + e, 4);          // rows
    for (int k = 0; k < 4; ++k) bt4(s + 4 * k, 1, dd + 4 * k, 1);  // columns
    float* o = v + (z + 1) * b.ps + j * t.c + c0;
    for (int k = 0; k < 16; ++k) store_c(o + k * b.ks, dd[k], cn);
  });
}

// The transpose, unpadded planes: B dV B^T of the band's tiles of dv added into dx rows 2 ti0 - 1 ..
// 2 ti1 of volume n. Tile rows overlap by two rows: a band's tiles are added in order by one thread,
// and bands that share rows are not added at the same time.
void wino3_input_t_band(const Tiles3& t, const float* dv, const Band& b, float* dx) {
  each_band_tile_block(t, b, [&](int64_t z, int64_t ti, int64_t tj, int64_t j, int64_t c0, int64_t cn) {
    v16 dd[16], s[16];
    const float* q = dv + z * b.ps + j * t.c + c0;
    for (int k = 0; k < 16; ++k) dd[k] = load_c(q + k * b.ks, cn);
    for (int k = 0; k < 4; ++k) b4(dd + 4 * k, 1, s + 4 * k, 1);
    for (int e = 0; e < 4; ++e) b4(s + e, 4, dd + e, 4);
    for (int a = 0; a < 4; ++a)
      for (int e = 0; e < 4; ++e)
        if (float* p = pixel3(t, dx, b.n * t.d + z, 2 * ti + a - 1, 2 * tj + e - 1, c0))
          store_c(p, load_c(p, cn) + dd[a * 4 + e], cn);
  });
}

// A^T m A of the band's tiles of m (unpadded planes) into y (2x2 output pixels a tile, cropped).
void wino3_output_band(const Tiles3& t, const float* m, const Band& b, float* y) {
  each_band_tile_block(t, b, [&](int64_t z, int64_t ti, int64_t tj, int64_t j, int64_t c0, int64_t cn) {
    v16 dd[16], s[8], o[4];
    const float* q = m + z * b.ps + j * t.c + c0;
    for (int k = 0; k < 16; ++k) dd[k] = load_c(q + k * b.ks, cn);
    for (int e = 0; e < 4; ++e) at2(dd + e, 4, s + e, 4);      // s[i * 4 + e]
    for (int i = 0; i < 2; ++i) at2(s + 4 * i, 1, o + 2 * i, 1);
    for (int i = 0; i < 2; ++i)
      for (int e = 0; e < 2; ++e)
        if (float* p = pixel3(t, y, b.n * t.d + z, 2 * ti + i, 2 * tj + e, c0)) store_c(p, o[i * 2 + e], cn);
  });
}

// The transpose: A dY A^T of the band's 2x2 blocks of dy (zeros past the edge), plane z at plane z + 1
// of dm (depth-padded, as the transformed input).
void wino3_output_t_band(const Tiles3& t, const float* dy, const Band& b, float* dm) {
  zero_pad_planes(t, b, dm);
  each_band_tile_block(t, b, [&](int64_t z, int64_t ti, int64_t tj, int64_t j, int64_t c0, int64_t cn) {
    v16 o[4], s[8], dd[16];
    for (int i = 0; i < 2; ++i)
      for (int e = 0; e < 2; ++e) {
        const float* p = pixel3(t, dy, b.n * t.d + z, 2 * ti + i, 2 * tj + e, c0);
        o[i * 2 + e] = p ? load_c(p, cn) : v16{};
      }
    for (int i = 0; i < 2; ++i) a4(o + 2 * i, 1, s + 4 * i, 1);  // s[i * 4 + e]
    for (int e = 0; e < 4; ++e) a4(s + e, 4, dd + e, 4);
    float* q = dm + (z + 1) * b.ps + j * t.c + c0;
    for (int k = 0; k < 16; ++k) store_c(q + k * b.ks, dd[k], cn);
  });
}

// The whole volume n as one band of the products' operands: (16, n * (d + pad) * th * tw, c), pad = 2
// for depth-padded operands (the transformed input and cotangent), 0 for the others.
Band volume_band(const Tiles3& t, int64_t n, int64_t pad) {
  const int64_t per = t.th * t.tw * t.c;
  return Band{n, 0, t.th, t.n * (t.d + pad) * per, per};
}

// kind 0: x (n, d, h, w, c) -> v (16, padded_tiles, c); 1: dv (16, tiles, c) -> dx; 2: m (16, tiles, c) -> y;
// 3: dy -> dm (16, padded_tiles, c). One volume a part.
ffi::Error Wino3Transform(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> in, ffi::ResultBuffer<ffi::F32> out,
                          int64_t kind) {
  auto id = in.dimensions(), od = out->dimensions();
  const bool to_tiles = kind == 0 || kind == 3;
  auto img = to_tiles ? id : od;
  auto til = to_tiles ? od : id;
  if (kind < 0 || kind > 3 || img.size() != 5 || til.size() != 3 || til[0] != 16)
    return ffi::Error::InvalidArgument("jaxseg winograd3d transform: inconsistent shapes");
  const Tiles3 t{img[0], img[1], img[2], img[3], img[4], (img[2] + 1) / 2, (img[3] + 1) / 2};
  if (til[1] != (to_tiles ? t.padded_tiles() : t.tiles()) || til[2] != t.c)
    return ffi::Error::InvalidArgument("jaxseg winograd3d transform: inconsistent shapes");
  const float* ip = in.typed_data();
  float* op = out->typed_data();
  const int64_t pad = to_tiles ? 2 : 0;
  parallel_parts(pool, t.n, [=](int64_t n) {
    const Band b = volume_band(t, n, pad);
    const int64_t at = n * (t.d + pad) * t.th * t.tw * t.c;   // the volume's first tile
    if (kind == 0) wino3_input_band(t, ip, b, op + at);
    else if (kind == 3) wino3_output_t_band(t, ip, b, op + at);
    else if (kind == 2) wino3_output_band(t, ip + at, b, op);
    else {
      std::memset(op + n * t.d * t.h * t.w * t.c, 0, t.d * t.h * t.w * t.c * sizeof(float));
      wino3_input_t_band(t, ip + at, b, op);
    }
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- products of the 3-D Winograd conv
// For each of the 16 tile positions k the depth taps are a (3, 1, 1) conv with no pads over the
// position's depth-padded planes of tiles, (n, d + 2, 1, tiles a plane, c), which the direct kernels run:
//   kind 0: m[k] = conv(v[k], u[k])           v (16, padded_tiles, ci), u (16, 3 ci, co_pad) -> (16, tiles, co)
//   kind 1: dv[k] = conv(dm[k], ut[k])        dm (16, padded_tiles, co), ut (16, 3 co, ci_pad) -> (16, tiles, ci)
//   kind 2: du[k] = conv's weight gradient    v, dm -> (16, 3 ci, co)
// Each transformed plane is stored once. Stored side by side for the three depth taps (one GEMM per
// position over 3 ci) they were 12 times the input, and their writing and reading outweighed the 2.25x
// fewer multiplications on all but the smallest volumes (experiments/bench/RESULTS.md, sessions 9, 11).
Dims wino3_depth_dims(int64_t n, int64_t d, int64_t tiles, int64_t ci, int64_t co) {
  Dims r{n, 1, tiles, ci, 1, tiles, co, 1, 1, 1, 1, 0, 0};
  r.d = d + 2;
  r.od = d;
  r.kd = 3;
  return r;
}

// The forward (or input-gradient) depth conv of position k's operands a (n volumes of d + 2 planes of
// `tiles` tiles, c_in channels; its `a_k` apart) into out (d planes; `out_k` apart), output-channel
// blocks [b0, b1), output tiles [q0, q1).
inline void depth_forward(const Dims& dm, int64_t co_pad, const float* a, const float* kernel, float* out, int64_t q0,
                          int64_t q1, int64_t b0, int64_t b1) {
  fwd_flat(dm, co_pad, a, kernel, out, q0, q1, b0, b1, FlatTiling{});
}

// The depth conv's weight gradient of one volume (dm: n = 1) added into du: v its depth-padded
// transformed input, g the cotangent's first (unpadded) plane; rb[z] = z * plane stride * c_in.
inline void depth_weight_grad(const Dims& dm, const DwUnits& units, const float* v, const float* g, float* du,
                              const int64_t* rb) {
  dw_flat(dm, units, v, g, du, rb, 0, dm.od, 0, units.count);
}

ffi::Error Wino3Product(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                        ffi::ResultBuffer<ffi::F32> out, int64_t n, int64_t d, int64_t kind) {
  auto ad = a.dimensions(), bd = b.dimensions(), od = out->dimensions();
  auto bad = [] { return ffi::Error::InvalidArgument("jaxseg winograd3d product: inconsistent shapes"); };
  if (ad.size() != 3 || bd.size() != 3 || od.size() != 3 || ad[0] != 16 || bd[0] != 16 || od[0] != 16 ||
      n < 1 || d < 1 || kind < 0 || kind > 2 || ad[1] % (n * (d + 2)) != 0)
    return bad();
  const int64_t padded = ad[1], tiles = padded / (n * (d + 2)), rows = n * d * tiles, ci = ad[2];
  const float* ap = a.typed_data();
  const float* bp = b.typed_data();
  float* op = out->typed_data();
  const int64_t threads = std::max<int64_t>(pool.num_threads(), 1);
  if (kind <= 1) {
    const int64_t co = od[2], co_pad = bd[2];
    if (bd[1] != 3 * ci || co_pad < co || co_pad % 16 != 0 || od[1] != rows) return bad();
    const Dims dm = wino3_depth_dims(n, d, tiles, ci, co);
    // Parts: (position, block of 64 output channels), pixel ranges only when these are too few.
    const int64_t blocks = (co + 63) / 64, ranges = std::max<int64_t>(1, (4 * threads + 16 * blocks - 1) / (16 * blocks)),
                  per = blocks * ranges;
    parallel_parts(pool, 16 * per, [=](int64_t p) {
      const int64_t k = p / per, blk = p % per / ranges, i = p % ranges;
      depth_forward(dm, co_pad, ap + k * padded * ci, bp + k * 3 * ci * co_pad, op + k * rows * co, rows * i / ranges,
                    rows * (i + 1) / ranges, blk, blk + 1);
    });
    return ffi::Error::Success();
  }
  const int64_t co = bd[2];
  if (bd[1] != padded || od[1] != 3 * ci || od[2] != co) return bad();
  const Dims dm = wino3_depth_dims(1, d, tiles, ci, co);
  std::vector<int64_t> row_base(d);
  for (int64_t z = 0; z < d; ++z) row_base[z] = z * tiles * ci;
  const int64_t* rb = row_base.data();
  const DwUnits units = dw_units(dm);
  // One part a position (no partial sums), one volume at a time.
  parallel_parts(pool, 16, [=](int64_t k) {
    float* du = op + k * 3 * ci * co;
    std::memset(du, 0, 3 * ci * co * sizeof(float));
    for (int64_t j = 0; j < n; ++j)
      depth_weight_grad(dm, units, ap + (k * n + j) * (d + 2) * tiles * ci,
                        bp + ((k * n + j) * (d + 2) + 1) * tiles * co, du, rb);
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- the fused 3-D Winograd conv
// The conv of Wino3Transform + Wino3Product + Wino3Transform in one call, band by band: a band of a
// few tile rows of one volume is transformed into a buffer of its own (its transformed input at most
// about `band_bytes`, an attribute: 512 KiB from winograd3d.py, so that it stays in L2), its 16 depth
// convs run there, and its output tiles go straight to y. Through the products'
// operands, the transformed input and cotangent (4 times the input and output) were written and
// read again in memory on every call; on the 16x32x32 layers of a 3-D U-Net that lost more than the
// 2.25x fewer multiplications gained (experiments/bench/RESULTS.md, session 11).
// Tile rows a band: as many as fit band_bytes (at least one), at most a volume's, spread evenly.
int64_t band_rows(const Tiles3& t, int64_t c, int64_t band_bytes) {
  const int64_t row_bytes = 16 * (t.d + 2) * t.tw * c * 4;
  const int64_t rows = std::max<int64_t>(1, std::min(t.th, band_bytes / std::max<int64_t>(row_bytes, 1)));
  return (t.th + (t.th + rows - 1) / rows - 1) / ((t.th + rows - 1) / rows);  // the same number of rows in each
}

// A band's buffer of depth-padded tiles: position k at ks = (d + 2) * rows * tw * c, planes ps = rows * tw * c.
Band local_band(const Tiles3& t, int64_t n, int64_t ti0, int64_t ti1, int64_t c, int64_t pad) {
  const int64_t ps = (ti1 - ti0) * t.tw * c;
  return Band{n, ti0, ti1, (t.d + pad) * ps, ps};
}

// Per-thread scratch, kept between calls (fresh pages cost a fault each): buffer i of at least n floats.
float* scratch(int i, size_t n) {
  struct Buf {
    std::unique_ptr<float[]> p;
    size_t n = 0;
  };
  thread_local Buf bufs[4];
  Buf& b = bufs[i];
  if (b.n < n) {
    b.p.reset(new float[n + 16]);
    b.n = n;
  }
  // 64-byte aligned, as XLA's buffers are
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(b.p.get()) + 63) & ~uintptr_t{63});
}

struct Wino3Geometry {
  Tiles3 tx, ty;  // the input's and the output's tiles (c = ci, co)
  int64_t rows;   // tile rows a band
  int64_t bands;  // bands a volume
  Band band(const Tiles3& t, int64_t n, int64_t i, int64_t pad) const {
    return local_band(t, n, i * rows, std::min(t.th, (i + 1) * rows), t.c, pad);
  }
};

// Bands as band_rows says, but narrower where a round of the backward (the even or the odd bands of
// every volume) would have fewer bands than there are threads (a small batch): those threads would idle.
Wino3Geometry wino3_geometry(int64_t n, int64_t d, int64_t h, int64_t w, int64_t ci, int64_t co,
                             int64_t band_bytes, int64_t threads) {
  Wino3Geometry g;
  g.tx = Tiles3{n, d, h, w, ci, (h + 1) / 2, (w + 1) / 2};
  g.ty = Tiles3{n, d, h, w, co, g.tx.th, g.tx.tw};
  g.rows = band_rows(g.tx, std::max(ci, co), band_bytes);
  auto bands = [&](int64_t rows) { return (g.tx.th + rows - 1) / rows; };
  while (g.rows > 1 && n * (bands(g.rows) / 2) < threads) --g.rows;
  g.bands = bands(g.rows);
  return g;
}

// y (n, d, h, w, co) = the conv of x (n, d, h, w, ci) with u (16, 3 ci, co_pad) (Wino2Kernel kind 0).
ffi::Error Wino3ConvForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> u,
                            ffi::ResultBuffer<ffi::F32> y, int64_t band_bytes) {
  auto xd = x.dimensions(), ud = u.dimensions(), yd = y->dimensions();
  if (xd.size() != 5 || yd.size() != 5 || ud.size() != 3 || ud[0] != 16 || ud[1] != 3 * xd[4] || ud[2] < yd[4] ||
      ud[2] % 16 != 0 || xd[0] != yd[0] || xd[1] != yd[1] || xd[2] != yd[2] || xd[3] != yd[3])
    return ffi::Error::InvalidArgument("jaxseg winograd3d conv: inconsistent shapes");
  const int64_t ci = xd[4], co = yd[4], co_pad = ud[2];
  const Wino3Geometry g = wino3_geometry(xd[0], xd[1], xd[2], xd[3], ci, co, band_bytes, pool.num_threads());
  const float* xp = x.typed_data();
  const float* up = u.typed_data();
  float* yp = y->typed_data();
  parallel_parts(pool, g.tx.n * g.bands, [=](int64_t item) {
    const int64_t n = item / g.bands, i = item % g.bands;
    const Band bv = g.band(g.tx, n, i, 2), bm = g.band(g.ty, n, i, 0);
    float* v = scratch(0, 16 * bv.ks);
    float* m = scratch(1, 16 * bm.ks);
    wino3_input_band(g.tx, xp, bv, v);
    const Dims dm = wino3_depth_dims(1, g.tx.d, bv.ps / ci, ci, co);
    for (int k = 0; k < 16; ++k)
      depth_forward(dm, co_pad, v + k * bv.ks, up + k * 3 * ci * co_pad, m + k * bm.ks, 0, dm.rows() * dm.ow, 0,
                    (co + 63) / 64);
    wino3_output_band(g.ty, m, bm, yp);
  });
  return ffi::Error::Success();
}

// The gradients: dx (n, d, h, w, ci) and du (16, 3 ci, co) (to Wino2Kernel kind 2) from x, dy (n, d, h,
// w, co) and ut (16, 3 co, ci_pad) (Wino2Kernel kind 1). Bands in two rounds, even then odd bands of
// each volume (bands next to each other add into two shared rows of dx); the bands are cut among a
// fixed set of parts, each with a partial du of its own, added in part order (the result does not
// depend on timing).
ffi::Error Wino3ConvBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                             ffi::Buffer<ffi::F32> ut, ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> du,
                             int64_t band_bytes) {
  auto xd = x.dimensions(), gd = dy.dimensions(), td = ut.dimensions(), dxd = dx->dimensions(), dud = du->dimensions();
  if (xd.size() != 5 || gd.size() != 5 || td.size() != 3 || dxd.size() != 5 || dud.size() != 3 ||
      xd[0] != gd[0] || xd[1] != gd[1] || xd[2] != gd[2] || xd[3] != gd[3] || td[0] != 16 || td[1] != 3 * gd[4] ||
      td[2] < xd[4] || td[2] % 16 != 0 || dud[0] != 16 || dud[1] != 3 * xd[4] || dud[2] != gd[4])
    return ffi::Error::InvalidArgument("jaxseg winograd3d conv gradient: inconsistent shapes");
  for (size_t i = 0; i < 5; ++i)
    if (dxd[i] != xd[i]) return ffi::Error::InvalidArgument("jaxseg winograd3d conv gradient: inconsistent shapes");
  const int64_t ci = xd[4], co = gd[4], ci_pad = td[2], size = 16 * 3 * ci * co;
  const Wino3Geometry g = wino3_geometry(xd[0], xd[1], xd[2], xd[3], ci, co, band_bytes, pool.num_threads());
  const float* xp = x.typed_data();
  const float* gp = dy.typed_data();
  const float* tp = ut.typed_data();
  float* dxp = dx->typed_data();
  float* dup = du->typed_data();
  const int64_t volume = g.tx.d * g.tx.h * g.tx.w * ci;
  // (volume, band) items of one round: volumes x bands of the round's parity.
  const int64_t even = (g.bands + 1) / 2, odd = g.bands / 2;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), g.tx.n * even));
  BufferPool::Buf partial = buffers().take(static_cast<size_t>(parts * size));
  float* pp = partial.p.get();
  parallel_parts(pool, parts, [=](int64_t p) {
    std::memset(pp + p * size, 0, size * sizeof(float));
    const int64_t v0 = g.tx.n * volume * p / parts, v1 = g.tx.n * volume * (p + 1) / parts;
    std::memset(dxp + v0, 0, (v1 - v0) * sizeof(float));
  });
  for (int round = 0; round < 2; ++round) {
    const int64_t per_volume = round == 0 ? even : odd, items = g.tx.n * per_volume;
    parallel_parts(pool, parts, [=](int64_t p) {
      float* dup_p = pp + p * size;
      for (int64_t item = items * p / parts; item < items * (p + 1) / parts; ++item) {
        const int64_t n = item / per_volume, i = 2 * (item % per_volume) + round;
        const Band bv = g.band(g.tx, n, i, 2), bm = g.band(g.ty, n, i, 2), bd = g.band(g.tx, n, i, 0);
        const int64_t tiles = bv.ps / ci;
        float* v = scratch(0, 16 * bv.ks);
        float* m = scratch(1, 16 * bm.ks);
        float* dv = scratch(2, 16 * bd.ks);
        wino3_output_t_band(g.ty, gp, bm, m);
        const Dims dmx = wino3_depth_dims(1, g.tx.d, tiles, co, ci);
        for (int k = 0; k < 16; ++k)
          depth_forward(dmx, ci_pad, m + k * bm.ks, tp + k * 3 * co * ci_pad, dv + k * bd.ks, 0, dmx.rows() * dmx.ow, 0,
                        (ci + 63) / 64);
        wino3_input_t_band(g.tx, dv, bd, dxp);
        wino3_input_band(g.tx, xp, bv, v);
        const Dims dmw = wino3_depth_dims(1, g.tx.d, tiles, ci, co);
        const DwUnits units = dw_units(dmw);
        std::vector<int64_t> rb(g.tx.d);
        for (int64_t z = 0; z < g.tx.d; ++z) rb[z] = z * bv.ps;
        for (int k = 0; k < 16; ++k)
          depth_weight_grad(dmw, units, v + k * bv.ks, m + k * bm.ks + bm.ps, dup_p + k * 3 * ci * co, rb.data());
      }
    });
  }
  // du = the partial sums in part order, cut among the threads by entries.
  const int64_t rparts = num_parts(size / 256 + 1, pool.num_threads());
  parallel_parts(pool, rparts, [=](int64_t r) {
    const int64_t i0 = size * r / rparts, i1 = size * (r + 1) / rparts;
    std::memcpy(dup + i0, pp + i0, (i1 - i0) * sizeof(float));
    for (int64_t p = 1; p < parts; ++p)
      for (int64_t i = i0; i < i1; ++i) dup[i] += pp[p * size + i];
  });
  buffers().give(std::move(partial));
  return ffi::Error::Success();
}

}  // namespace

// Both handlers: two float32 operands, one result, the strides and the pads before
// (depth: sd = 1, pd = 0 for a 2-D conv).
static auto ConvBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Attr<int64_t>("sd")
      .Attr<int64_t>("sh")
      .Attr<int64_t>("sw")
      .Attr<int64_t>("pd")
      .Attr<int64_t>("ph")
      .Attr<int64_t>("pw");
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsegConvForward, Forward, ConvBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsegConvWeightGrad, WeightGrad, ConvBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsegConvInputGrad, InputGrad, ConvBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsegConvTransposeForward, TransposeForward, ConvBinding());

static auto MatmulBinding() {
  return ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>();
}
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsegBatchedMatmul, BatchedMatmul, MatmulBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsegBatchedMatmulTN, BatchedMatmulTN, MatmulBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsegWinogradTransform, WinoTransform,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("th")
                                  .Attr<int64_t>("tw")
                                  .Attr<int64_t>("ph")
                                  .Attr<int64_t>("pw")
                                  .Attr<int64_t>("kind"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsegWinograd3dTransform, Wino3Transform,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("kind"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsegWinograd3dProduct, Wino3Product,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("n")
                                  .Attr<int64_t>("d")
                                  .Attr<int64_t>("kind"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsegWinograd3dConvForward, Wino3ConvForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("band_bytes"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsegWinograd3dConvBackward, Wino3ConvBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("band_bytes"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsegWinograd3dKernel, Wino2Kernel,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("kind"));

extern "C" int jaxseg_cpu_conv_vector_bits() {
#if defined(__AVX512F__)
  return 512;
#elif defined(__AVX2__)
  return 256;
#else
  return 128;
#endif
}
