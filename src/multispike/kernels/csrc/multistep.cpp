// Fused multi-step spiking neuron, forward and backward, for the CPU.
//
// Built by multispike/kernels/cpu.py with the system C++ compiler into a small shared library
// (no PyTorch headers: plain pointers, called through ctypes) and cached per machine.
//
// Layout: the input is [T, N] (time-major, contiguous). Neurons are split into chunks of
// BLK; each chunk keeps its membrane in a local array and loops over T, so every input element
// is read once and every output written once. The backward runs the reverse loop over T per
// chunk, carrying dL/dV. Chunks run in parallel (OpenMP).
//
// Arithmetic matches the reference loop in multispike.functional operation by operation
// (same order, same rounding: built with -ffp-contract=off, no -ffast-math), so forward
// spikes are bit-identical; for bfloat16 storage every forward operation is computed in
// float and rounded to bfloat16, as PyTorch does for each eager op.
//
// Per step (MT-SNN Eq 3-11, Ternary Spike Eq 7-8):
//   charge  h = A*v + x/D                 (IF: A = D = 1; LIF: A = decay, D = 1;
//                                          PLIF, V_reset = 0: A = 1 - 1/tau, D = tau)
//           h = v + (x - (v - vr))/tau    (PLIF with V_reset != 0, Eq 6)
//   fire    b = sum_k [h >= th_k] (- sum_k [h <= -th_k] for signed rules)
//           s = [h >= th_0] (+ [h <= -th_0])         the main spike, resets the membrane
//   out     b, or amp*b
//   reset   v = h*(1 - s) + vr*s
//
// Backward (g = surrogate derivative):
//   dh = gb * sum_k g(h - th_k) (+ g(-h - th_k))        gb = dL/dout (* amp)
//      + dv * (1 - s)
//      + dv * (vr - h) * (g(h - th_0) - g(-h - th_0))   unless detach_reset
//   dx = dh / D;  dv_prev = dh * A;  dL/dtau += -dh * (h - v_prev) / tau;  dL/damp += dL/dout*b
//
// Saved for the backward: either h (the membrane before firing, storage dtype) or, when the
// backward needs no membrane value (window surrogates, detach_reset, no learnable tau), one
// byte per neuron and step: bits 0-2 the number of surrogate windows that contain h, bit 3
// the main spike s, bits 4-7 the spike value b + 8.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

constexpr int BLK = 256;
constexpr int MAX_THR = 16;

struct Args {
  int64_t T, N;
  int32_t dtype;      // 0 float32, 1 float64, 2 bfloat16
  int32_t plif_vr;    // 1: PLIF charge in the V_reset != 0 form
  int32_t n_thr;      // positive thresholds, main first
  int32_t is_signed;  // ternary rules: mirrored thresholds fire -1
  int32_t save_mode;  // 0 nothing, 1 h, 2 one-byte code
  int32_t has_amp;
  int32_t sg_kind;    // 0 rectangular, 1 clamp, 2 sigmoid, 3 atan
  int32_t detach;
  int32_t need_tau;
  int32_t need_amp;
  int32_t nthreads;
  int32_t pad_;
  double A, D, vr, tau, amp;
  double sg_width;   // rectangular/clamp: window width; sigmoid/atan: alpha
  double sg_half;    // window half-width (rectangular, clamp)
  double sg_k;       // atan: pi/2 * alpha
  double sg_c;       // atan: alpha/2
  double thr[MAX_THR];
};

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

template <typename C>
inline C surrogate(int kind, C d, C half, C width, C k, C c) {
  switch (kind) {
    case 0:
      return std::fabs(d) <= half ? C(1) / width : C(0);
    case 1:
      return std::fabs(d) <= half ? C(1) : C(0);
    case 2: {
      const C sg = C(1) / (C(1) + std::exp(-width * d));
      return width * sg * (C(1) - sg);
    }
    default: {
      const C z = k * d;
      return c / (C(1) + z * z);
    }
  }
}

// ---- forward --------------------------------------------------------------------------------
template <typename S, bool PLIFVR>
void forward_impl(const Args& a, const S* __restrict x, S* __restrict out, void* saved) {
  using T = Tr<S>;
  using C = typename T::C;
  const int64_t N = a.N, TT = a.T;
  const int64_t nchunks = (N + BLK - 1) / BLK;
  const C A = C(a.A), D = C(a.D), vr = C(a.vr), tau = C(a.tau), amp = C(a.amp);
  const C half = C(a.sg_half);
  const int K = a.n_thr;
  const bool sgn = a.is_signed != 0;
  C th[MAX_THR];
  for (int k = 0; k < K; ++k) th[k] = C(a.thr[k]);
  S* __restrict saved_h = static_cast<S*>(saved);
  uint8_t* __restrict saved_code = static_cast<uint8_t*>(saved);

#pragma omp parallel for schedule(static) num_threads(a.nthreads)
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t i0 = c * BLK;
    const int n = static_cast<int>(std::min<int64_t>(BLK, N - i0));
    alignas(64) C v[BLK];
    alignas(64) C h[BLK];
    alignas(64) C b[BLK];
    alignas(64) C s[BLK];
    alignas(64) C cnt[BLK];
    for (int i = 0; i < n; ++i) v[i] = C(0);
    for (int64_t t = 0; t < TT; ++t) {
      const int64_t off = t * N + i0;
      const S* __restrict xt = x + off;
      if (PLIFVR) {
#pragma omp simd
        for (int i = 0; i < n; ++i) {
          const C xv = T::ld(xt[i]);
          h[i] = T::rnd(v[i] + T::rnd(T::rnd(xv - T::rnd(v[i] - vr)) / tau));
        }
      } else {
#pragma omp simd
        for (int i = 0; i < n; ++i) {
          const C xv = T::ld(xt[i]);
          h[i] = T::rnd(T::rnd(A * v[i]) + T::rnd(xv / D));
        }
      }
      const C th0 = th[0];
      if (sgn) {
#pragma omp simd
        for (int i = 0; i < n; ++i) {
          const C p = h[i] >= th0 ? C(1) : C(0);
          const C q = h[i] <= -th0 ? C(1) : C(0);
          b[i] = p - q;
          s[i] = p + q;
        }
      } else {
#pragma omp simd
        for (int i = 0; i < n; ++i) {
          const C p = h[i] >= th0 ? C(1) : C(0);
          b[i] = p;
          s[i] = p;
        }
      }
      for (int k = 1; k < K; ++k) {
        const C tk = th[k];
        if (sgn) {
#pragma omp simd
          for (int i = 0; i < n; ++i)
            b[i] += (h[i] >= tk ? C(1) : C(0)) - (h[i] <= -tk ? C(1) : C(0));
        } else {
#pragma omp simd
          for (int i = 0; i < n; ++i) b[i] += h[i] >= tk ? C(1) : C(0);
        }
      }
      S* __restrict ot = out + off;
      if (a.has_amp) {
#pragma omp simd
        for (int i = 0; i < n; ++i) ot[i] = T::st(T::rnd(amp * b[i]));
      } else {
#pragma omp simd
        for (int i = 0; i < n; ++i) ot[i] = T::st(b[i]);
      }
      if (a.save_mode == 1) {
        S* __restrict ht = saved_h + off;
#pragma omp simd
        for (int i = 0; i < n; ++i) ht[i] = T::st(h[i]);
      } else if (a.save_mode == 2) {
        for (int i = 0; i < n; ++i) cnt[i] = C(0);
        for (int k = 0; k < K; ++k) {
          const C tk = th[k];
#pragma omp simd
          for (int i = 0; i < n; ++i) {
            cnt[i] += std::fabs(T::rnd(h[i] - tk)) <= half ? C(1) : C(0);
            if (sgn) cnt[i] += std::fabs(T::rnd(-h[i] - tk)) <= half ? C(1) : C(0);
          }
        }
        uint8_t* __restrict ct = saved_code + off;
#pragma omp simd
        for (int i = 0; i < n; ++i) {
          const int code = static_cast<int>(cnt[i]) | (static_cast<int>(s[i]) << 3) |
                           ((static_cast<int>(b[i]) + 8) << 4);
          ct[i] = static_cast<uint8_t>(code);
        }
      }
#pragma omp simd
      for (int i = 0; i < n; ++i) v[i] = T::rnd(T::rnd(h[i] * (C(1) - s[i])) + T::rnd(vr * s[i]));
    }
  }
}

// ---- backward -------------------------------------------------------------------------------
template <typename S>
void backward_impl(const Args& a, const S* __restrict gout, const void* saved, S* __restrict gx,
                   double* sums) {
  using T = Tr<S>;
  using C = typename T::C;
  const int64_t N = a.N, TT = a.T;
  const int64_t nchunks = (N + BLK - 1) / BLK;
  const C A = C(a.A), D = C(a.D), vr = C(a.vr), amp = C(a.amp);
  const C half = C(a.sg_half), width = C(a.sg_width), sk = C(a.sg_k), sc = C(a.sg_c);
  const int K = a.n_thr, kind = a.sg_kind;
  const bool sgn = a.is_signed != 0, detach = a.detach != 0;
  const bool code_mode = a.save_mode == 2;
  const bool need_tau = a.need_tau != 0, need_amp = a.need_amp != 0, has_amp = a.has_amp != 0;
  C th[MAX_THR];
  for (int k = 0; k < K; ++k) th[k] = C(a.thr[k]);
  const S* __restrict saved_h = static_cast<const S*>(saved);
  const uint8_t* __restrict saved_code = static_cast<const uint8_t*>(saved);
  // one partial sum per chunk, added in chunk order: the result does not depend on threads
  double* part_tau = nullptr;
  double* part_amp = nullptr;
  double* parts = nullptr;
  if (need_tau || need_amp) {
    parts = new double[2 * nchunks];
    part_tau = parts;
    part_amp = parts + nchunks;
  }

#pragma omp parallel for schedule(static) num_threads(a.nthreads)
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t i0 = c * BLK;
    const int n = static_cast<int>(std::min<int64_t>(BLK, N - i0));
    alignas(64) C dv[BLK];
    alignas(64) C hc[BLK];
    alignas(64) C hp[BLK];
    alignas(64) C g[BLK];
    alignas(64) C s[BLK];
    alignas(64) C b[BLK];
    alignas(64) C dh[BLK];
    alignas(64) C acc_tau[BLK];
    alignas(64) C acc_amp[BLK];
    for (int i = 0; i < n; ++i) {
      dv[i] = C(0);
      acc_tau[i] = C(0);
      acc_amp[i] = C(0);
    }
    if (!code_mode) {
      const S* ht = saved_h + (TT - 1) * N + i0;
      for (int i = 0; i < n; ++i) hc[i] = T::ld(ht[i]);
    }
    for (int64_t t = TT - 1; t >= 0; --t) {
      const int64_t off = t * N + i0;
      const S* __restrict go = gout + off;
      if (code_mode) {
        const uint8_t* __restrict ct = saved_code + off;
#pragma omp simd
        for (int i = 0; i < n; ++i) {
          const int code = ct[i];
          g[i] = C(code & 7);
          s[i] = C((code >> 3) & 1);
          b[i] = C((code >> 4) - 8);
        }
        // g holds the number of windows; rectangular divides by the width, clamp does not
        const C scale = kind == 0 ? width : C(1);
#pragma omp simd
        for (int i = 0; i < n; ++i) {
          const C gov = T::ld(go[i]);
          const C gb = has_amp ? gov * amp : gov;
          if (need_amp) acc_amp[i] += gov * b[i];
          dh[i] = gb * g[i] / scale + dv[i] * (C(1) - s[i]);
        }
      } else {
        const C th0 = th[0];
        // surrogate derivative summed over every threshold (and its mirror for signed rules)
        for (int i = 0; i < n; ++i) g[i] = C(0);
        if (kind <= 1) {
          // windows: count them, scale once (rectangular divides by the width)
          for (int k = 0; k < K; ++k) {
            const C tk = th[k];
#pragma omp simd
            for (int i = 0; i < n; ++i) {
              g[i] += std::fabs(T::rnd(hc[i] - tk)) <= half ? C(1) : C(0);
              if (sgn) g[i] += std::fabs(T::rnd(-hc[i] - tk)) <= half ? C(1) : C(0);
            }
          }
        } else {
          for (int k = 0; k < K; ++k) {
            const C tk = th[k];
            for (int i = 0; i < n; ++i) {
              g[i] += surrogate<C>(kind, T::rnd(hc[i] - tk), half, width, sk, sc);
              if (sgn) g[i] += surrogate<C>(kind, T::rnd(-hc[i] - tk), half, width, sk, sc);
            }
          }
        }
#pragma omp simd
        for (int i = 0; i < n; ++i) {
          const C p = hc[i] >= th0 ? C(1) : C(0);
          const C q = sgn && hc[i] <= -th0 ? C(1) : C(0);
          s[i] = p + q;
        }
        if (need_amp) {
#pragma omp simd
          for (int i = 0; i < n; ++i) {
            const C p = hc[i] >= th0 ? C(1) : C(0);
            const C q = sgn && hc[i] <= -th0 ? C(1) : C(0);
            b[i] = p - q;
          }
          for (int k = 1; k < K; ++k) {
            const C tk = th[k];
#pragma omp simd
            for (int i = 0; i < n; ++i)
              b[i] += (hc[i] >= tk ? C(1) : C(0)) - (sgn && hc[i] <= -tk ? C(1) : C(0));
          }
        }
        const C scale = kind == 0 ? width : C(1);
#pragma omp simd
        for (int i = 0; i < n; ++i) {
          const C gov = T::ld(go[i]);
          const C gb = has_amp ? gov * amp : gov;
          if (need_amp) acc_amp[i] += gov * b[i];
          const C gsum = kind <= 1 ? g[i] / scale : g[i];
          dh[i] = gb * gsum + dv[i] * (C(1) - s[i]);
        }
        if (!detach) {
          if (kind <= 1) {
#pragma omp simd
            for (int i = 0; i < n; ++i) {
              C gm = std::fabs(T::rnd(hc[i] - th0)) <= half ? C(1) : C(0);
              if (sgn) gm -= std::fabs(T::rnd(-hc[i] - th0)) <= half ? C(1) : C(0);
              dh[i] += dv[i] * (vr - hc[i]) * (gm / scale);
            }
          } else {
            for (int i = 0; i < n; ++i) {
              C gm = surrogate<C>(kind, T::rnd(hc[i] - th0), half, width, sk, sc);
              if (sgn) gm -= surrogate<C>(kind, T::rnd(-hc[i] - th0), half, width, sk, sc);
              dh[i] += dv[i] * (vr - hc[i]) * gm;
            }
          }
        }
      }
      if (need_tau) {
        // dh/dtau = -(h - v_prev)/tau; v_prev is the reset of h[t-1] (0 at t = 0)
        if (t > 0) {
          const S* hpt = saved_h + (t - 1) * N + i0;
          const C th0 = th[0];
#pragma omp simd
          for (int i = 0; i < n; ++i) {
            const C hv = T::ld(hpt[i]);
            hp[i] = hv;
            const C p = hv >= th0 ? C(1) : C(0);
            const C q = sgn && hv <= -th0 ? C(1) : C(0);
            const C sv = p + q;
            const C vprev = T::rnd(T::rnd(hv * (C(1) - sv)) + T::rnd(vr * sv));
            acc_tau[i] += dh[i] * (hc[i] - vprev);
          }
        } else {
#pragma omp simd
          for (int i = 0; i < n; ++i) acc_tau[i] += dh[i] * hc[i];
        }
      } else if (!code_mode && t > 0) {
        const S* hpt = saved_h + (t - 1) * N + i0;
#pragma omp simd
        for (int i = 0; i < n; ++i) hp[i] = T::ld(hpt[i]);
      }
      S* __restrict gxt = gx + off;
#pragma omp simd
      for (int i = 0; i < n; ++i) {
        gxt[i] = T::st(dh[i] / D);
        dv[i] = dh[i] * A;
      }
      if (!code_mode) std::memcpy(hc, hp, sizeof(C) * n);
    }
    if (parts != nullptr) {
      double st = 0.0, sa = 0.0;
      for (int i = 0; i < n; ++i) {
        st += static_cast<double>(acc_tau[i]);
        sa += static_cast<double>(acc_amp[i]);
      }
      part_tau[c] = st;
      part_amp[c] = sa;
    }
  }
  double st = 0.0, sa = 0.0;
  if (parts != nullptr) {
    for (int64_t c = 0; c < nchunks; ++c) {
      st += part_tau[c];
      sa += part_amp[c];
    }
    delete[] parts;
  }
  sums[0] = -st / a.tau;
  sums[1] = sa;
}

template <typename S>
int forward_dispatch(const Args& a, const void* x, void* out, void* saved) {
  if (a.plif_vr)
    forward_impl<S, true>(a, static_cast<const S*>(x), static_cast<S*>(out), saved);
  else
    forward_impl<S, false>(a, static_cast<const S*>(x), static_cast<S*>(out), saved);
  return 0;
}

}  // namespace

extern "C" {

int ms_abi_version() { return 1; }

int ms_forward(const Args* a, const void* x, void* out, void* saved) {
  if (a->n_thr < 1 || a->n_thr > MAX_THR) return -1;
  switch (a->dtype) {
    case 0:
      return forward_dispatch<float>(*a, x, out, saved);
    case 1:
      return forward_dispatch<double>(*a, x, out, saved);
    case 2:
      return forward_dispatch<uint16_t>(*a, x, out, saved);
    default:
      return -2;
  }
}

int ms_backward(const Args* a, const void* gout, const void* saved, void* gx, double* sums) {
  if (a->n_thr < 1 || a->n_thr > MAX_THR) return -1;
  switch (a->dtype) {
    case 0:
      backward_impl<float>(*a, static_cast<const float*>(gout), saved, static_cast<float*>(gx),
                           sums);
      return 0;
    case 1:
      backward_impl<double>(*a, static_cast<const double*>(gout), saved,
                            static_cast<double*>(gx), sums);
      return 0;
    case 2:
      backward_impl<uint16_t>(*a, static_cast<const uint16_t*>(gout), saved,
                              static_cast<uint16_t*>(gx), sums);
      return 0;
    default:
      return -2;
  }
}

}  // extern "C"
