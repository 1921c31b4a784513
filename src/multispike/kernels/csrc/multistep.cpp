// Fused multi-step spiking neuron, forward and backward, for the CPU.
//
// Built by multispike/kernels/cpu.py with the system C++ compiler into a small shared library
// (no PyTorch headers: plain pointers, called through ctypes) and cached per machine.
//
// Layout: the input is [T, N] (time-major, contiguous). Neurons are split into chunks of
// BLK; each chunk keeps its membrane in a local array and loops over T, so every input element
// is read once and every output written once. The backward runs the reverse loop over T per
// chunk, carrying dL/dV. Chunks run in parallel (OpenMP). Each time step of a chunk is one
// vectorised pass; its results go through small local buffers and are written with
// non-temporal stores when the arrays are larger than the cache.
//
// Arithmetic matches the reference loop in multispike.functional operation by operation
// (same order, same rounding: built with -ffp-contract=off, no -ffast-math), so forward
// spikes are bit-identical; for bfloat16 storage every forward operation is computed in
// float and rounded to bfloat16, as PyTorch does for each eager op.
//
// Per step (MT-SNN Eq 3-11, Ternary Spike Eq 7-8; soft reset beyond both papers):
//   charge  h = A*v + x                   (IF: A = 1; LIF: A = decay)         form 0
//           h = A*v + x/D                 (PLIF, V_reset = 0: A = 1 - 1/tau, D = tau)  form 1
//           h = v + (x - (v - vr))/tau    (PLIF with V_reset != 0, MT-SNN Eq 6)        form 2
//   fire    b = sum_k [h >= th_k] (- sum_k [h <= -th_k] for signed rules)
//           integer rules (levels = D): u = h*inv (inv = 1/V_th), b = round(clamp(u, lo, D)),
//           lo = 0 (-D signed), round half to even (torch.round); "any" resets where b != 0
//           s = [h >= th_r] (+ [h <= -th_r])         the spike that resets (hard reset): th_r
//                                                     = th_0 ("main") or the lowest ("any")
//   out     amp*b (amp = 1 without a learnable amplitude: exact)
//   reset   v = h*(1 - s) + vr*s                       hard ("main", "any")
//           v = h - b*vth                              soft (vth = V_th; s = 0 in the code)
//   start   v = vr before the first step (V_reset, as SpikingJelly and Norse)
//
// Backward (g = surrogate derivative):
//   dh = gb * G + dv * (1 - s) + dv * (vr - h) * gm     hard reset (last term unless detach_reset)
//   dh = gb * G + dv - dv * vth * G                     soft reset (last term unless detach_reset)
//   G  = db/dH = sum_k g(h - th_k) (+ g(-h - th_k))     gb = dL/dout * amp
//        integer rules: G = inv where lo <= u <= D, else 0 (straight through)
//   gm = dS/dH = g(h - th_r) - g(-h - th_r)            reset_grad 0 ("surrogate")
//   gm = d|b0|/dH = sign(b0) * (g(h - th_r) + g(-h - th_r))   reset_grad 1 ("spike"),
//        b0 = p - q the resetting spike (unsigned rules: s * g(h - th_r)); 0 where none fired
//   dx = dh / D;  dv_prev = dh * A;  dL/dtau += -dh * (h - v_prev) / tau;  dL/damp += dL/dout*b
//   (v_prev = vr at t = 0; else the reset of h[t-1], hard or soft)
//
// Learned thresholds (lthr != null): th_k, th_r, vth and inv are read from lthr = [th_0 ...
// th_{K-1}, th_r, vth, inv] (the layer's current values, a CPU tensor) instead of the struct,
// and with need_thr the backward sums their gradient over every neuron and step into gthr:
//   Lb = gb - keep * dv * vth (soft reset) or gb       the whole dL/db
//   dL/dth_k += Lb * (-g(h - th_k) + g(-h - th_k))     (the second term for signed rules)
//   dL/dth_r += keep * dv * (vr - h) * dS/dth_r,  dS/dth_r = -(g(h - th_r) + g(-h - th_r)),
//               or sign(b0) * (g(-h - th_r) - g(h - th_r)) with reset_grad 1     hard reset
//   dL/dvth  += -dv * b                                soft reset (detach_reset or not)
//   dL/dinv  += Lb * h  where lo <= u <= D            integer rules
//
// Saved for the backward: either h (the membrane before firing, storage dtype) or, when the
// backward needs no membrane value (window surrogates, detach_reset, no learnable tau), one
// byte per neuron and step: bits 0-2 the number of surrogate windows that contain h, bit 3
// the resetting spike s (0 for a soft reset), bits 4-7 the spike value b + 8.
//
// Specialisation: the common cases (float32 and bfloat16; 1 or 3 thresholds; charge forms 0
// and 1; hard or soft reset; the integer rules with each reset; learned thresholds) are
// template instances whose inner loop has no runtime branch; everything else (float64
// included) runs the same code with the options read at run time (template value -1). Every
// option that selects code inside a `#pragma omp simd` loop must be a template parameter of
// the fast instances: GCC 12 does not vectorise a select on a loop-invariant runtime bool
// (`soft ? a : b`), and one such flag turns a whole instance scalar (10-17x slower). Nor does it
// vectorise floor() without -fno-trapping-math: round_even adds and subtracts 1.5 * 2^23.
// Check with -fopt-info-vec-missed (or -fdump-tree-vect-details) after changing a loop.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

#ifndef MS_BLK
#define MS_BLK 128
#endif
constexpr int BLK = MS_BLK;
constexpr int MAX_THR = 16;
constexpr int RT = -1;  // template value: read the option at run time

struct Args {
  int64_t T, N;
  int32_t dtype;      // 0 float32, 1 float64, 2 bfloat16
  int32_t form;       // charge form 0, 1, 2 (see above)
  int32_t n_thr;      // positive thresholds, main first
  int32_t is_signed;  // ternary rules: mirrored thresholds fire -1
  int32_t save_mode;  // 0 nothing, 1 h, 2 one-byte code
  int32_t has_amp;
  int32_t sg_kind;    // 0 rectangular, 1 clamp, 2 sigmoid, 3 atan
  int32_t detach;
  int32_t need_tau;
  int32_t need_amp;
  int32_t nthreads;
  int32_t stream;     // 1: write outputs with non-temporal stores (arrays larger than the cache)
  int32_t check;      // 1: count non-finite inputs (the layer's input check, in the same pass)
  int32_t reset_grad; // 0: reset gradient through the surrogate of s; 1: through |b0| (see top)
  int32_t soft;       // 0: hard reset at +-rthr; 1: soft reset v = h - b*vth
  int32_t levels;     // 0: threshold rules; D >= 1: integer rules, b = round(clamp(h*inv, lo, D))
  int32_t by_value;   // integer rules, reset "any": the hard reset fires where b != 0
  double A, D, vr, tau, amp;
  double sg_param;   // rectangular/clamp: window width; sigmoid/atan: alpha
  double sg_half;    // window half-width (rectangular, clamp)
  double sg_k;       // atan: pi/2 * alpha
  double sg_c;       // atan: alpha/2
  double rthr;       // hard reset: the threshold whose crossing resets (th_r)
  double vth;        // soft reset: V_th, subtracted once per unit of b
  double inv;        // integer rules: 1/V_th
  double thr[MAX_THR];
  int32_t need_thr;   // backward: sum the learned thresholds' gradient into gthr
  int32_t pad_;
  const double* lthr; // learned thresholds [th_0 .. th_{K-1}, th_r, vth, inv], or null
  double* gthr;       // backward, need_thr: dL/dlthr, K + 3 numbers
  uint8_t* pack;      // forward, or null: the spikes' codes b - pack_lo, packed (see below)
  int32_t pack_bits;  // 1, 2, 4 or 8 bits per code: 8 / pack_bits codes per byte
  int32_t pack_lo;    // the smallest spike value b
};

// The packed spike codes (compact_spikes keeps them instead of the spikes a layer saves):
// row t holds ceil(N / per) bytes, per = 8 / pack_bits; byte j of row t holds the codes of
// neurons per*j .. per*j + per - 1 from the low bits up (a short last byte padded with zeros).
inline int64_t pack_row(int64_t N, int bits) {
  const int per = 8 / bits;
  return (N + per - 1) / per;
}

// Pack n codes (n <= BLK, the chunk starting at neuron i0, a multiple of 8) into dst.
inline void pack_codes(const uint8_t* __restrict codes, int n, int bits,
                       uint8_t* __restrict dst) {
  if (bits == 8) {
    std::memcpy(dst, codes, static_cast<size_t>(n));
    return;
  }
  const int per = 8 / bits;
  const uint8_t mask = static_cast<uint8_t>((1 << bits) - 1);
  const int nb = (n + per - 1) / per;
  for (int j = 0; j < nb; ++j) {
    uint8_t byte = 0;
    const int k1 = std::min(per, n - j * per);
    for (int k = 0; k < k1; ++k)
      byte |= static_cast<uint8_t>((codes[j * per + k] & mask) << (k * bits));
    dst[j] = byte;
  }
}

// ---- storage types ------------------------------------------------------------------------
template <typename S>
struct Tr;

template <>
struct Tr<float> {
  using C = float;
  static inline C ld(float v) { return v; }
  static inline float st(C v) { return v; }
  static inline C rnd(C v) { return v; }
};

template <>
struct Tr<double> {
  using C = double;
  static inline C ld(double v) { return v; }
  static inline double st(C v) { return v; }
  static inline C rnd(C v) { return v; }
};

// bfloat16 as raw bits; round to nearest even like PyTorch's c10::BFloat16
template <>
struct Tr<uint16_t> {
  using C = float;
  static inline C ld(uint16_t b) {
    uint32_t u = static_cast<uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  static inline uint16_t st(C f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>(0x7fc0);
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>(u >> 16);
  }
  static inline C rnd(C f) { return ld(st(f)); }
};

// Copy a chunk's results from a local buffer to memory; with `stream`, through non-temporal
// stores that skip the cache (no read-for-ownership of the destination lines).
template <typename S>
inline void put(S* __restrict dst, const S* __restrict src, int n, bool stream) {
#if defined(__AVX__)
  if (stream) {
    int i = 0;
    while (i < n && (reinterpret_cast<uintptr_t>(dst + i) & 31u) != 0) {
      dst[i] = src[i];
      ++i;
    }
    constexpr int W = 32 / static_cast<int>(sizeof(S));
    for (; i + W <= n; i += W)
      _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i),
                          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    for (; i < n; ++i) dst[i] = src[i];
    return;
  }
#endif
  std::memcpy(dst, src, sizeof(S) * static_cast<size_t>(n));
}

inline void fence(bool stream) {
#if defined(__AVX__)
  if (stream) _mm_sfence();
#endif
  (void)stream;
}

template <int F>
inline int pick(int runtime) {
  if constexpr (F >= 0) {
    (void)runtime;
    return F;
  } else {
    return runtime;
  }
}

// exp for the sigmoid surrogate: float gets a branch-free version the compiler vectorises
// (Cody-Waite reduction and a degree-6 polynomial, within 2 ulp of expf on [-87, 88]); double
// keeps std::exp.
inline float vexp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  // round to the nearest integer by the 1.5 * 2^23 trick (no libm call, vectorises)
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}
inline double vexp(double x) { return std::exp(x); }

// surrogate derivative of kind KIND (window kinds 0/1 give the indicator; the caller scales)
template <int KIND, typename C>
inline C sg(int kind, C d, C half, C alpha, C k, C c) {
  const int kd = pick<KIND>(kind);
  if (kd <= 1) return std::fabs(d) <= half ? C(1) : C(0);
  if (kd == 2) {
    const C e = C(1) / (C(1) + vexp(-alpha * d));
    return alpha * e * (C(1) - e);
  }
  const C z = k * d;
  return c / (C(1) + z * z);
}

// round half to even (torch.round) of |c| <= 2^22 (float) or 2^51 (double), NaN kept: adding
// 1.5 * 2^23 (2^52) leaves no fraction bits, so the sum rounds c to an integer, ties to even,
// and subtracting it back is exact. Branch-free and without floor(), which GCC vectorises only
// with -fno-trapping-math; the callers clamp c to [-127, 127] first. The same result as
// floor-based rounding, +0 for c in (-1, 0] included (checked over every float in range).
template <typename C>
inline C round_even(C c) {
  const C m = sizeof(C) == 4 ? C(12582912.0) : C(6755399441055744.0);
  return (c + m) - m;
}

// ---- forward --------------------------------------------------------------------------------
// RST: the reset, 0 hard at +-rthr, 1 soft, 2 hard where b != 0 (integer rules, "any");
// ILEV: 0 threshold rules, 1 integer rules (levels > 0); RT: read at run time
inline int reset_mode(const Args& a) { return a.soft ? 1 : (a.by_value ? 2 : 0); }

template <typename S, int FORM, int KC, int SGN, int CODE, int RST, int ILEV>
void forward_impl(const Args& a, const S* __restrict x, S* __restrict out, void* saved,
                  int32_t* nonfinite) {
  using T = Tr<S>;
  using C = typename T::C;
  const int64_t nchunks = (a.N + BLK - 1) / BLK;
  const bool stream = a.stream != 0;

#pragma omp parallel num_threads(a.nthreads)
  {
    // set up inside the parallel region: locals of the outlined function, so the template
    // values stay compile-time constants in the loop below
    const int64_t N = a.N, TT = a.T;
    const C A = C(a.A), D = C(a.D), vr = C(a.vr), tau = C(a.tau);
    const C amp = a.has_amp ? C(a.amp) : C(1);
    const C half = C(a.sg_half);
    const int form = pick<FORM>(a.form);
    const int K = pick<KC>(a.n_thr);
    const bool sgn = pick<SGN>(a.is_signed) != 0;
    const int save = CODE == 1 ? 2 : (CODE == 0 ? std::min(a.save_mode, 1) : a.save_mode);
    const bool check = a.check != 0;
    // compile-time in the specialised instances: a runtime flag in the loop below (a select
    // on a loop-invariant bool) keeps GCC from vectorising it
    const int rst = pick<RST>(reset_mode(a));
    const bool soft = rst == 1;
    const bool by_value = rst == 2;
    const bool ilev = pick<ILEV>(a.levels > 0 ? 1 : 0) != 0;
    const double* L = a.lthr;  // learned thresholds, or null (read once, here)
    const C rthr = C(L ? L[a.n_thr] : a.rthr), vth = C(L ? L[a.n_thr + 1] : a.vth);
    const C inv = C(L ? L[a.n_thr + 2] : a.inv), dmax = C(a.levels);
    const C dmin = a.is_signed ? -C(a.levels) : C(0);
    const C big = std::numeric_limits<C>::max();
    C th[MAX_THR];
    for (int k = 0; k < a.n_thr; ++k) th[k] = C(L ? L[k] : a.thr[k]);
    const C th0 = th[0];
    uint8_t* const pk = a.pack;
    const int pbits = a.pack_bits > 0 ? a.pack_bits : 8, plo = a.pack_lo;
    const int64_t prow = pack_row(N, pbits);
    S* __restrict saved_h = static_cast<S*>(saved);
    uint8_t* __restrict saved_code = static_cast<uint8_t*>(saved);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t i0 = c * BLK;
      const int n = static_cast<int>(std::min<int64_t>(BLK, N - i0));
      alignas(64) C v[BLK];
      alignas(64) S obuf[BLK];
      alignas(64) S hbuf[BLK];
      alignas(64) uint8_t cbuf[BLK];
      alignas(64) uint8_t pbuf[BLK];  // b - pack_lo: the codes compact_spikes keeps
      alignas(64) C bad[BLK];  // per lane: non-finite inputs seen (only with check)
      for (int i = 0; i < n; ++i) {
        v[i] = vr;  // the membrane starts at V_reset (as the reference loop)
        bad[i] = C(0);
      }
      for (int64_t t = 0; t < TT; ++t) {
        const int64_t off = t * N + i0;
        const S* __restrict xt = x + off;
#pragma omp simd
        for (int i = 0; i < n; ++i) {
          const C xv = T::ld(xt[i]);
          // NaN fails every comparison; inf exceeds the largest finite value
          if (check) bad[i] += std::fabs(xv) <= big ? C(0) : C(1);
          const C vi = v[i];
          C h;
          if (form == 0)
            h = T::rnd(T::rnd(A * vi) + xv);
          else if (form == 1)
            h = T::rnd(T::rnd(A * vi) + T::rnd(xv / D));
          else
            h = T::rnd(vi + T::rnd(T::rnd(xv - T::rnd(vi - vr)) / tau));
          C b;
          if (ilev) {  // integer rules
            const C u = T::rnd(h * inv);
            b = round_even(std::min(std::max(u, dmin), dmax));
          } else {
            const C p = h >= th0 ? C(1) : C(0);
            const C q = sgn && h <= -th0 ? C(1) : C(0);
            b = p - q;
#pragma GCC unroll 16
            for (int k = 1; k < K; ++k)
              b += (h >= th[k] ? C(1) : C(0)) - (sgn && h <= -th[k] ? C(1) : C(0));
          }
          // the spike that resets (hard reset): at +-rthr, which is th0 for reset="main";
          // b != 0 for an integer rule's "any"
          const C s = soft       ? C(0)
                      : by_value ? (b != C(0) ? C(1) : C(0))
                                 : (h >= rthr ? C(1) : C(0)) + (sgn && h <= -rthr ? C(1) : C(0));
          obuf[i] = T::st(T::rnd(amp * b));
          pbuf[i] = static_cast<uint8_t>(static_cast<int>(b) - plo);
          if (save == 1) hbuf[i] = T::st(h);
          if (save == 2) {
            C cnt = C(0);
#pragma GCC unroll 16
            for (int k = 0; k < K; ++k) {
              cnt += std::fabs(T::rnd(h - th[k])) <= half ? C(1) : C(0);
              if (sgn) cnt += std::fabs(T::rnd(-h - th[k])) <= half ? C(1) : C(0);
            }
            cbuf[i] = static_cast<uint8_t>(static_cast<int>(cnt) | (static_cast<int>(s) << 3) |
                                           ((static_cast<int>(b) + 8) << 4));
          }
          v[i] = soft ? T::rnd(h - T::rnd(b * vth))
                      : T::rnd(T::rnd(h * (C(1) - s)) + T::rnd(vr * s));
        }
        put(out + off, obuf, n, stream);
        if (save == 1) put(saved_h + off, hbuf, n, stream);
        if (save == 2) put(saved_code + off, cbuf, n, stream);
        if (pk) pack_codes(pbuf, n, pbits, pk + t * prow + i0 / (8 / pbits));
      }
      if (check) {
        C any = C(0);
        for (int i = 0; i < n; ++i) any += bad[i];
        if (any != C(0)) {
#pragma omp atomic write
          *nonfinite = 1;
        }
      }
    }
    fence(stream);
  }
}

// ---- backward -------------------------------------------------------------------------------
template <typename S, int KC, int SGN, int KIND, int CODE, int LT, int RST, int ILEV>
void backward_impl(const Args& a, const S* __restrict gout, const void* saved, S* __restrict gx,
                   double* sums) {
  using T = Tr<S>;
  using C = typename T::C;
  const int64_t nchunks = (a.N + BLK - 1) / BLK;
  const bool lt_any = pick<LT>(a.need_thr) != 0 && a.lthr != nullptr && a.gthr != nullptr;
  const int nlt = lt_any ? a.n_thr + 3 : 0;  // learned-threshold sums per chunk
  // one partial sum per chunk, added in chunk order: the result does not depend on threads
  double* parts = new double[(2 + nlt) * nchunks];
  double* part_tau = parts;
  double* part_amp = parts + nchunks;
  double* part_thr = parts + 2 * nchunks;
  const bool stream = a.stream != 0;

#pragma omp parallel num_threads(a.nthreads)
  {
    const int64_t N = a.N, TT = a.T;
    const C A = C(a.A), D = C(a.D), vr = C(a.vr);
    const C amp = a.has_amp ? C(a.amp) : C(1);
    const C half = C(a.sg_half), alpha = C(a.sg_param), sk = C(a.sg_k), sc = C(a.sg_c);
    const int K = pick<KC>(a.n_thr);
    const bool sgn = pick<SGN>(a.is_signed) != 0;
    const int kind = pick<KIND>(a.sg_kind);
    const bool code_mode = pick<CODE>(a.save_mode == 2 ? 1 : 0) != 0;
    // rectangular divides the window indicator by its width, clamp does not
    const C scale = a.sg_kind == 0 ? C(a.sg_param) : C(1);
    const C rscale = kind <= 1 ? C(1) / scale : C(1);  // learned thresholds' sums only
    const C keep = a.detach ? C(0) : C(1);  // the reset's surrogate path, cut by detach_reset
    const bool spike_reset = a.reset_grad != 0;
    const int rst = pick<RST>(reset_mode(a));
    const bool soft = rst == 1;
    const bool by_value = rst == 2;
    const bool ilev = pick<ILEV>(a.levels > 0 ? 1 : 0) != 0;
    const double* L = a.lthr;  // learned thresholds, or null (read once, here)
    const C rthr = C(L ? L[a.n_thr] : a.rthr), vth = C(L ? L[a.n_thr + 1] : a.vth);
    const C inv = C(L ? L[a.n_thr + 2] : a.inv), dmax = C(a.levels);
    const C dmin = a.is_signed ? -C(a.levels) : C(0);
    const bool need_tau = a.need_tau != 0;
    const bool need_sums = need_tau || a.need_amp != 0;
    // sum the learned thresholds' gradient (LT = 1 is dispatched only when lt_any holds)
    const bool lt = LT == RT ? lt_any : LT != 0;
    C th[MAX_THR];
    for (int k = 0; k < a.n_thr; ++k) th[k] = C(L ? L[k] : a.thr[k]);
    // learned thresholds: the rows of acc_thr the loop below writes (see there)
    auto thr_row = [&](int k) {
      return k < K ? !ilev : (k == K ? !soft : (k == K + 1 ? soft : ilev));
    };
    const S* __restrict saved_h = static_cast<const S*>(saved);
    const uint8_t* __restrict saved_code = static_cast<const uint8_t*>(saved);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t i0 = c * BLK;
      const int n = static_cast<int>(std::min<int64_t>(BLK, N - i0));
      alignas(64) C dv[BLK];
      alignas(64) C acc_tau[BLK];
      alignas(64) C acc_amp[BLK];
      alignas(64) S vstart[BLK];  // h[-1] := V_reset, whose reset is V_reset (see below)
      alignas(64) S gbuf[BLK];
      alignas(64) C dhb[BLK];  // dL/dH of the step, kept for dL/dtau
      // learned thresholds: rows 0..K-1 the thresholds, K the reset's, K+1 vth, K+2 inv
      alignas(64) C acc_thr[LT == 0 ? 1 : MAX_THR + 3][BLK];
      for (int i = 0; i < n; ++i) {
        dv[i] = C(0);
        acc_tau[i] = C(0);
        acc_amp[i] = C(0);
        vstart[i] = T::st(vr);
      }
      if (lt)
        for (int k = 0; k < nlt; ++k)
          if (thr_row(k))
            for (int i = 0; i < n; ++i) acc_thr[k][i] = C(0);
      for (int64_t t = TT - 1; t >= 0; --t) {
        const int64_t off = t * N + i0;
        const S* __restrict go = gout + off;
        if (code_mode) {
          const uint8_t* __restrict ct = saved_code + off;
#pragma omp simd
          for (int i = 0; i < n; ++i) {
            const int code = ct[i];
            const C cnt = C(code & 7);
            const C s = C((code >> 3) & 1);
            const C b = C((code >> 4) - 8);
            const C gov = T::ld(go[i]);
            acc_amp[i] += gov * b;
            const C dh = gov * amp * cnt / scale + dv[i] * (C(1) - s);
            gbuf[i] = T::st(dh / D);
            dv[i] = dh * A;
          }
        } else {
          const S* __restrict ht = saved_h + off;
          // v_prev = reset(h[t-1]) for dL/dtau (h[t-1] is this chunk's next step: cached); at
          // t = 0 the reset of h = V_reset, which is V_reset itself (a hard reset gives
          // V_reset either way; a soft reset has V_reset = 0 and no spike at 0): no select on
          // t > 0 in the loop, which kept GCC from vectorising the bfloat16 instances
          const S* __restrict hp = t > 0 ? saved_h + off - N : vstart;
#pragma omp simd
          for (int i = 0; i < n; ++i) {
            const C h = T::ld(ht[i]);
            C gsum = C(0);
            C b = C(0);
            // learned thresholds: the whole dL/db (the output's, and a soft reset's -vth*dv)
            const C lb = !lt ? C(0)
                             : (soft ? T::ld(go[i]) * amp - keep * (dv[i] * vth)
                                     : T::ld(go[i]) * amp);
            if (ilev) {  // integer rules: gsum holds G = db/dH itself (straight through)
              const C u = T::rnd(h * inv);
              b = round_even(std::min(std::max(u, dmin), dmax));
              gsum = (u >= dmin && u <= dmax) ? inv : C(0);
              if (lt) acc_thr[K + 2][i] += (u >= dmin && u <= dmax) ? lb * h : C(0);
            } else {
#pragma GCC unroll 16
              for (int k = 0; k < K; ++k) {
                const C gk = sg<KIND, C>(kind, T::rnd(h - th[k]), half, alpha, sk, sc);
                gsum += gk;
                b += h >= th[k] ? C(1) : C(0);
                C dk = -gk;  // db/dth_k
                if (sgn) {
                  const C gn = sg<KIND, C>(kind, T::rnd(-h - th[k]), half, alpha, sk, sc);
                  gsum += gn;
                  b -= h <= -th[k] ? C(1) : C(0);
                  dk += gn;
                }
                if (lt) acc_thr[k][i] += lb * dk;  // scaled once per chunk (window kinds)
              }
            }
            // the spike that resets (hard reset), at +-rthr (b != 0 for an integer "any")
            const C p0 = by_value ? (b > C(0) ? C(1) : C(0)) : (h >= rthr ? C(1) : C(0));
            const C q0 = by_value ? (b < C(0) ? C(1) : C(0)) : (sgn && h <= -rthr ? C(1) : C(0));
            const C s = p0 + q0;
            const C gp = sg<KIND, C>(kind, T::rnd(h - rthr), half, alpha, sk, sc);
            const C gq = sgn ? sg<KIND, C>(kind, T::rnd(-h - rthr), half, alpha, sk, sc) : C(0);
            // dS/dH, or d|b0|/dH = sign(b0) * db0/dH with b0 = p0 - q0 ("spike")
            const C gm = spike_reset ? (p0 - q0) * (gp + gq) : gp - gq;
            if (lt) {
              if (soft) {
                acc_thr[K + 1][i] += -(dv[i] * b);  // v = h - b*vth
              } else {  // dS/dth_r, then through v = h*(1 - S) + vr*S
                const C gr = spike_reset ? (p0 - q0) * (gq - gp) : -(gp + gq);
                acc_thr[K][i] += keep * (dv[i] * (vr - h) * gr);  // scaled per chunk
              }
            }
            const C gov = T::ld(go[i]);
            acc_amp[i] += gov * b;
            const C gb = gov * amp;
            const C dvi = dv[i];
            C dh;
            if (soft) {  // v = h - b*vth: dV/dH = 1 - vth * db/dH
              const C G = kind <= 1 && !ilev ? gsum / scale : gsum;
              dh = gb * G + dvi - keep * (dvi * vth * G);
            } else if (ilev) {
              const C gms = kind <= 1 ? gm / scale : gm;
              dh = gb * gsum + dvi * (C(1) - s) + keep * (dvi * (vr - h) * gms);
            } else if (kind <= 1) {
              dh = gb * gsum / scale + dvi * (C(1) - s) + keep * (dvi * (vr - h) * (gm / scale));
            } else {
              dh = gb * gsum + dvi * (C(1) - s) + keep * (dvi * (vr - h) * gm);
            }
            dhb[i] = dh;  // dL/dH[t], for dL/dtau below
            gbuf[i] = T::st(dh / D);
            dv[i] = dh * A;
          }
          // dL/dtau in a loop of its own: a runtime branch inside the loop above would keep
          // GCC from vectorising it (the same sums, element by element, in the same order)
          if (need_tau) {
#pragma omp simd
            for (int i = 0; i < n; ++i) {
              const C h = T::ld(ht[i]);
              const C dh = dhb[i];
              const C hv = T::ld(hp[i]);
              C vprev;
              C bp = C(0);
              if (ilev) {
                bp = round_even(std::min(std::max(T::rnd(hv * inv), dmin), dmax));
              } else if (soft || by_value) {
#pragma GCC unroll 16
                for (int k = 0; k < K; ++k)
                  bp += (hv >= th[k] ? C(1) : C(0)) - (sgn && hv <= -th[k] ? C(1) : C(0));
              }
              if (soft) {
                vprev = T::rnd(hv - T::rnd(bp * vth));
              } else {
                const C sp = by_value ? (bp != C(0) ? C(1) : C(0))
                                      : (hv >= rthr ? C(1) : C(0)) + (sgn && hv <= -rthr ? C(1) : C(0));
                vprev = T::rnd(T::rnd(hv * (C(1) - sp)) + T::rnd(vr * sp));
              }
              acc_tau[i] += dh * (h - vprev);
            }
          }
        }
        put(gx + off, gbuf, n, stream);
      }
      // the chunk's partial sums, only when a scalar gradient is wanted (they cost as much as
      // a time step at T = 1); a SIMD reduction: its lane order is fixed by the build, so the
      // result still does not depend on the number of threads
      double st = 0.0, sa = 0.0;
      if (need_sums) {
#pragma omp simd reduction(+ : st, sa)
        for (int i = 0; i < n; ++i) {
          st += static_cast<double>(acc_tau[i]);
          sa += static_cast<double>(acc_amp[i]);
        }
      }
      part_tau[c] = st;
      part_amp[c] = sa;
      // the learned thresholds' sums: a SIMD reduction too (an in-order double sum per row
      // had cost as much as the whole reverse loop at T = 4), of the rows this rule and reset
      // write (the others are 0)
      if (lt)
        for (int k = 0; k < nlt; ++k) {
          double sk = 0.0;
          if (thr_row(k)) {
            const C* __restrict row = acc_thr[k];
#pragma omp simd reduction(+ : sk)
            for (int i = 0; i < n; ++i) sk += static_cast<double>(row[i]);
          }
          // the window surrogates' 1/width, left out of the per-element sums above
          part_thr[c * nlt + k] = k <= K ? sk * static_cast<double>(rscale) : sk;
        }
    }
    fence(stream);
  }
  double st = 0.0, sa = 0.0;
  for (int64_t c = 0; c < nchunks; ++c) {
    st += part_tau[c];
    sa += part_amp[c];
  }
  for (int k = 0; k < nlt; ++k) {
    double sk = 0.0;
    for (int64_t c = 0; c < nchunks; ++c) sk += part_thr[c * nlt + k];
    a.gthr[k] = sk;
  }
  delete[] parts;
  sums[0] = -st / a.tau;
  sums[1] = sa;
}

// ---- dispatch to the specialised instances ---------------------------------------------------
template <typename S>
void forward_general(const Args& a, const void* x, void* out, void* saved, int32_t* nf) {
  forward_impl<S, RT, RT, RT, RT, RT, RT>(a, static_cast<const S*>(x), static_cast<S*>(out),
                                          saved, nf);
}

template <typename S>
void backward_general(const Args& a, const void* g, const void* saved, void* gx, double* sums) {
  backward_impl<S, RT, RT, RT, RT, RT, RT, RT>(a, static_cast<const S*>(g), saved,
                                               static_cast<S*>(gx), sums);
}

// the keys below hold only these: K = 1 or 3, charge forms 0 and 1, the resets 0-2, a
// by-value reset only for the integer rules, which never save the one-byte code; other cases
// run the general instance (as do the combinations no table lists)
inline bool fast_ok(const Args& a) {
  return (a.n_thr == 1 || a.n_thr == 3) && a.form <= 1 && !(a.soft && a.by_value) &&
         !(a.by_value && a.levels <= 0) && !(a.levels > 0 && a.save_mode == 2);
}

// Forward: threshold rules (K = 1 or 3; charge form 0 with either save mode, form 1 saving h)
// with a hard or soft reset, and the integer rules (K = 1, saving h) with each reset. Returns
// false when no instance covers the case.
constexpr int fkey(int il, int rs, int form, int k3, int sg, int cd) {
  return (il << 7) | (rs << 4) | (form << 3) | (k3 << 2) | (sg << 1) | cd;
}

template <typename S>
bool forward_fast(const Args& a, const void* x, void* out, void* saved, int32_t* nf) {
  const S* xs = static_cast<const S*>(x);
  S* os = static_cast<S*>(out);
  const int key = fkey(a.levels > 0, reset_mode(a), a.form, a.n_thr == 3, a.is_signed,
                       a.save_mode == 2);
  switch (key) {
#define MS_F(IL, RS, FORM, K3, SG, CD)                                                     \
  case fkey(IL, RS, FORM, K3, SG, CD):                                                     \
    forward_impl<S, FORM, (K3) ? 3 : 1, SG, CD, RS, IL>(a, xs, os, saved, nf);             \
    return true;
#define MS_F_THR(RS)                                                                       \
  MS_F(0, RS, 0, 0, 0, 0) MS_F(0, RS, 0, 0, 0, 1) MS_F(0, RS, 0, 0, 1, 0)                  \
  MS_F(0, RS, 0, 0, 1, 1) MS_F(0, RS, 0, 1, 0, 0) MS_F(0, RS, 0, 1, 0, 1)                  \
  MS_F(0, RS, 0, 1, 1, 0) MS_F(0, RS, 0, 1, 1, 1) MS_F(0, RS, 1, 0, 0, 0)                  \
  MS_F(0, RS, 1, 0, 1, 0) MS_F(0, RS, 1, 1, 0, 0) MS_F(0, RS, 1, 1, 1, 0)
#define MS_F_INT(RS) \
  MS_F(1, RS, 0, 0, 0, 0) MS_F(1, RS, 0, 0, 1, 0) MS_F(1, RS, 1, 0, 0, 0) MS_F(1, RS, 1, 0, 1, 0)
    MS_F_THR(0) MS_F_THR(1)
    MS_F_INT(0) MS_F_INT(1) MS_F_INT(2)
#undef MS_F_INT
#undef MS_F_THR
#undef MS_F
    default:
      return false;
  }
}

// Backward, in two tables (two units of a parallel build, see below): threshold rules with
// fixed thresholds (K = 1 or 3; surrogate window, sigmoid or atan; the one-byte code with
// windows) with a hard or soft reset; and the rest: learned thresholds (window or sigmoid), the
// integer rules (K = 1) with each reset, window or sigmoid surrogate, learned or not.
constexpr int bkey(int il, int rs, int lt, int kd, int k3, int sg, int cd) {
  return (il << 8) | (rs << 6) | (lt << 5) | (kd << 3) | (k3 << 2) | (sg << 1) | cd;
}

inline bool learned(const Args& a) {
  return a.need_thr != 0 && a.lthr != nullptr && a.gthr != nullptr;
}

// which table: 0 fixed-threshold rules, 1 learned thresholds or integer rules
inline int backward_table(const Args& a) { return (a.levels > 0 || learned(a)) ? 1 : 0; }

inline int backward_key(const Args& a) {
  const int kind = a.sg_kind <= 1 ? 0 : a.sg_kind;  // window kinds share one instance
  return bkey(a.levels > 0, reset_mode(a), learned(a), kind, a.n_thr == 3, a.is_signed,
              a.save_mode == 2);
}

#define MS_B(IL, RS, LT, KD, K3, SG, CD)                                                   \
  case bkey(IL, RS, LT, KD, K3, SG, CD):                                                   \
    backward_impl<S, (K3) ? 3 : 1, SG, KD, CD, LT, RS, IL>(a, gs, saved, gxs, sums);       \
    return true;

template <typename S>
bool backward_fast_fixed(const Args& a, const void* g, const void* saved, void* gx,
                         double* sums) {
  const S* gs = static_cast<const S*>(g);
  S* gxs = static_cast<S*>(gx);
  switch (backward_key(a)) {
#define MS_B_THR(RS)                                                                       \
  MS_B(0, RS, 0, 0, 0, 0, 0) MS_B(0, RS, 0, 0, 0, 0, 1) MS_B(0, RS, 0, 0, 0, 1, 0)         \
  MS_B(0, RS, 0, 0, 0, 1, 1) MS_B(0, RS, 0, 0, 1, 0, 0) MS_B(0, RS, 0, 0, 1, 0, 1)         \
  MS_B(0, RS, 0, 0, 1, 1, 0) MS_B(0, RS, 0, 0, 1, 1, 1) MS_B(0, RS, 0, 2, 0, 0, 0)         \
  MS_B(0, RS, 0, 2, 0, 1, 0) MS_B(0, RS, 0, 2, 1, 0, 0) MS_B(0, RS, 0, 2, 1, 1, 0)         \
  MS_B(0, RS, 0, 3, 0, 0, 0) MS_B(0, RS, 0, 3, 0, 1, 0) MS_B(0, RS, 0, 3, 1, 0, 0)         \
  MS_B(0, RS, 0, 3, 1, 1, 0)
    MS_B_THR(0) MS_B_THR(1)
#undef MS_B_THR
    default:
      return false;
  }
}

template <typename S>
bool backward_fast_rest(const Args& a, const void* g, const void* saved, void* gx,
                        double* sums) {
  const S* gs = static_cast<const S*>(g);
  S* gxs = static_cast<S*>(gx);
  switch (backward_key(a)) {
    // learned thresholds (never the one-byte code: their gradient needs h)
#define MS_B_LT(RS)                                                                        \
  MS_B(0, RS, 1, 0, 0, 0, 0) MS_B(0, RS, 1, 0, 0, 1, 0) MS_B(0, RS, 1, 0, 1, 0, 0)         \
  MS_B(0, RS, 1, 0, 1, 1, 0) MS_B(0, RS, 1, 2, 0, 0, 0) MS_B(0, RS, 1, 2, 0, 1, 0)         \
  MS_B(0, RS, 1, 2, 1, 0, 0) MS_B(0, RS, 1, 2, 1, 1, 0)
#define MS_B_INT(RS)                                                                       \
  MS_B(1, RS, 0, 0, 0, 0, 0) MS_B(1, RS, 0, 0, 0, 1, 0) MS_B(1, RS, 0, 2, 0, 0, 0)         \
  MS_B(1, RS, 0, 2, 0, 1, 0) MS_B(1, RS, 1, 0, 0, 0, 0) MS_B(1, RS, 1, 0, 0, 1, 0)         \
  MS_B(1, RS, 1, 2, 0, 0, 0) MS_B(1, RS, 1, 2, 0, 1, 0)
    MS_B_LT(0) MS_B_LT(1)
    MS_B_INT(0) MS_B_INT(1) MS_B_INT(2)
#undef MS_B_INT
#undef MS_B_LT
    default:
      return false;
  }
}
#undef MS_B

}  // namespace

// ---- build units and entry points ------------------------------------------------------------
// One translation unit (the default), or MS_PARTS parts compiled in parallel and linked
// (cpu.py, -DMS_PART=p for p < MS_PARTS: compiling every instance takes ~40 s of one core):
// part p defines the units assigned to it, part 0 also the exported functions. A unit is an
// extern "C" function of hidden visibility; a fast unit returns 0 when no instance of its
// table covers the case (the caller then runs the general instance).
#define MS_PARTS 6
#ifndef MS_PART
#define MS_PART -1  // all parts
#endif
#define MS_IN_PART(p) (MS_PART < 0 || MS_PART == (p))
#define MS_UNIT extern "C" __attribute__((visibility("hidden")))

MS_UNIT int ms_fwd_f32(const void* a, const void* x, void* out, void* saved, int32_t* nf);
MS_UNIT int ms_fwd_bf16(const void* a, const void* x, void* out, void* saved, int32_t* nf);
MS_UNIT int ms_bwd_f32_fixed(const void* a, const void* g, const void* s, void* gx, double* r);
MS_UNIT int ms_bwd_f32_rest(const void* a, const void* g, const void* s, void* gx, double* r);
MS_UNIT int ms_bwd_bf16_fixed(const void* a, const void* g, const void* s, void* gx, double* r);
MS_UNIT int ms_bwd_bf16_rest(const void* a, const void* g, const void* s, void* gx, double* r);

#define MS_FWD_UNIT(NAME, S)                                                          \
  MS_UNIT int NAME(const void* a, const void* x, void* out, void* saved, int32_t* nf) { \
    return forward_fast<S>(*static_cast<const Args*>(a), x, out, saved, nf);          \
  }
#define MS_BWD_UNIT(NAME, FN, S)                                                        \
  MS_UNIT int NAME(const void* a, const void* g, const void* s, void* gx, double* r) {  \
    return FN<S>(*static_cast<const Args*>(a), g, s, gx, r);                            \
  }

#if MS_IN_PART(1)
MS_FWD_UNIT(ms_fwd_f32, float)
#endif
#if MS_IN_PART(2)
MS_FWD_UNIT(ms_fwd_bf16, uint16_t)
#endif
#if MS_IN_PART(0)  // with the general instances (2-3 s)
MS_BWD_UNIT(ms_bwd_f32_rest, backward_fast_rest, float)
#endif
#if MS_IN_PART(3)
MS_BWD_UNIT(ms_bwd_f32_fixed, backward_fast_fixed, float)
#endif
#if MS_IN_PART(4)
MS_BWD_UNIT(ms_bwd_bf16_fixed, backward_fast_fixed, uint16_t)
#endif
#if MS_IN_PART(5)
MS_BWD_UNIT(ms_bwd_bf16_rest, backward_fast_rest, uint16_t)
#endif

#if MS_IN_PART(0)  // the entry points and the general instances (float64: only those)
template <typename S>
int unpack_impl(const uint8_t* pack, S* out, int64_t T, int64_t N, int bits, int lo, double amp,
                int nthreads) {
  using Q = Tr<S>;
  using C = typename Q::C;
  const int per = 8 / bits;
  const int mask = (1 << bits) - 1;
  const int64_t row = pack_row(N, bits);
  const C a = C(amp);
  C value[256];  // every code's spike a·(code + lo), rounded as the forward rounds it
  for (int c = 0; c < 256; ++c) value[c] = Q::rnd(a * C((c & mask) + lo));
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const uint8_t* src = pack + t * row;
    S* dst = out + t * N;
    for (int64_t i = 0; i < N; ++i)
      dst[i] = Q::st(value[(src[i / per] >> ((i % per) * bits)) & mask]);
  }
  return 0;
}

extern "C" {

int ms_abi_version() { return 9; }

// nonfinite: set to 1 when a->check and an input element is NaN or infinite (else untouched)
int ms_forward(const Args* a, const void* x, void* out, void* saved, int32_t* nonfinite) {
  if (a->n_thr < 1 || a->n_thr > MAX_THR) return -1;
  const bool fast = fast_ok(*a);
  switch (a->dtype) {
    case 0:
      if (!(fast && ms_fwd_f32(a, x, out, saved, nonfinite)))
        forward_general<float>(*a, x, out, saved, nonfinite);
      return 0;
    case 1:  // float64: the general instance only (exactness, not speed)
      return forward_general<double>(*a, x, out, saved, nonfinite), 0;
    case 2:
      if (!(fast && ms_fwd_bf16(a, x, out, saved, nonfinite)))
        forward_general<uint16_t>(*a, x, out, saved, nonfinite);
      return 0;
    default:
      return -2;
  }
}

int ms_backward(const Args* a, const void* gout, const void* saved, void* gx, double* sums) {
  if (a->n_thr < 1 || a->n_thr > MAX_THR) return -1;
  const bool fast = fast_ok(*a);
  const bool fixed = backward_table(*a) == 0;
  switch (a->dtype) {
    case 0:
      if (!(fast && (fixed ? ms_bwd_f32_fixed : ms_bwd_f32_rest)(a, gout, saved, gx, sums)))
        backward_general<float>(*a, gout, saved, gx, sums);
      return 0;
    case 1:
      return backward_general<double>(*a, gout, saved, gx, sums), 0;
    case 2:
      if (!(fast && (fixed ? ms_bwd_bf16_fixed : ms_bwd_bf16_rest)(a, gout, saved, gx, sums)))
        backward_general<uint16_t>(*a, gout, saved, gx, sums);
      return 0;
    default:
      return -2;
  }
}

// out[t, i] = amp * (code + lo) in the storage dtype: the inverse of the packed codes above
int ms_unpack(const uint8_t* pack, void* out, int64_t T, int64_t N, int32_t bits, int32_t lo,
              double amp, int32_t dtype, int32_t nthreads) {
  if (bits != 1 && bits != 2 && bits != 4 && bits != 8) return -1;
  switch (dtype) {
    case 0:
      return unpack_impl<float>(pack, static_cast<float*>(out), T, N, bits, lo, amp, nthreads);
    case 1:
      return unpack_impl<double>(pack, static_cast<double*>(out), T, N, bits, lo, amp, nthreads);
    case 2:
      return unpack_impl<uint16_t>(pack, static_cast<uint16_t*>(out), T, N, bits, lo, amp,
                                   nthreads);
    default:
      return -2;
  }
}

}  // extern "C"
#endif
