// Native training kernels: the ARM rate and the synthesis with its MSE, each forward and
// backward in one pass over the data (coolchic/model/fused.py describes the functions; it
// holds their torch versions, which these must equal). Built by coolchic/model/native.py
// with the system C++ compiler and called through ctypes: plain C entry points, no Python
// or torch headers, so it compiles in about a second.
//
// The layers work on blocks of L positions (latents or pixels) held in SIMD vector types
// (Vec<T>: L lanes in a few registers), so the small layers (widths of a dozen) become
// broadcast-weight multiply-adds on registers, several output features at a time, instead
// of memory-bound matrix products. (With plain loops over lanes GCC vectorized along the
// wrong axis: 3x slower.)
// Activations of a block live in a few kB of stack, so the backward pass reuses them
// without recomputation or full-size temporaries.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

constexpr int L = 32;              // positions per block
constexpr int MAX_WIDTH = 64;      // widest layer (config.py checks 1..64)
constexpr int MAX_LAYERS = 5;      // 4 hidden layers and the output layer
constexpr int FLUSH_BLOCKS = 256;  // blocks between flushes of the lane gradient sums
constexpr double LN2 = 0.69314718055994530942;

#if defined(__AVX512F__)
constexpr int VBYTES = 64;
#elif defined(__AVX__)
constexpr int VBYTES = 32;
#else
constexpr int VBYTES = 16;
#endif

// One SIMD register of T; NV of them hold one feature of a block's L positions. (Vector
// types wider than the hardware's are lowered badly by GCC: spills and scalar selects.)
template <typename T>
struct Simd {
  typedef T Reg __attribute__((vector_size(VBYTES)));
};
template <typename T>
using Reg = typename Simd<T>::Reg;
template <typename T>
constexpr int NV = L * sizeof(T) / VBYTES;
// outputs computed together: R * NV independent multiply-add chains, enough to hide the
// FMA latency without running out of registers
template <typename T>
constexpr int TILE = NV<T> >= 8 ? 1 : 8 / NV<T>;

template <typename T>
struct Vec {
  Reg<T> v[NV<T>];
};

template <typename T>
T* lanes(Vec<T>* v) {
  return reinterpret_cast<T*>(v);
}

// f(lane) for lane = 0 .. cnt - 1, with a constant trip count for full blocks (a loop of
// runtime length becomes a slow `rep movs` copy or a scalar loop)
template <typename F>
inline void for_lanes(int cnt, F f) {
  if (cnt == L) {
    for (int lane = 0; lane < L; ++lane) f(lane);
  } else {
    for (int lane = 0; lane < cnt; ++lane) f(lane);
  }
}

// A multilayer perceptron, ReLU between layers; params hold, layer after layer, the
// weight (out, in) row-major then the bias (out).
template <typename T>
struct Mlp {
  int n_layers;
  const int64_t* widths;  // n_layers + 1
  const T* params;
  int64_t offsets[MAX_LAYERS];  // of each layer's weight in params; its bias follows
  int64_t size;

  Mlp(int n, const int64_t* w, const T* p) : n_layers(n), widths(w), params(p) {
    size = 0;
    for (int k = 0; k < n; ++k) {
      offsets[k] = size;
      size += widths[k + 1] * (widths[k] + 1);
    }
  }
};

// z[o] = sum_i w[o * stride_o + i * stride_i] x[i] (+ b[o]) for o = o0 .. o0 + R - 1, then
// ReLU (`relu`) or zero where mask[o] <= 0 (`mask`, the ReLU's derivative).
template <typename T, int R>
inline void dense(const T* __restrict w, int stride_o, int stride_i, const T* b, int n_in,
                  const Vec<T>* __restrict x, Vec<T>* __restrict z, int o0, bool relu,
                  const Vec<T>* __restrict mask) {
  constexpr int N = NV<T>;
  const Reg<T> zero = {};
  Reg<T> acc[R][N];
  for (int r = 0; r < R; ++r)
    for (int n = 0; n < N; ++n) acc[r][n] = zero + (b ? b[o0 + r] : T(0));
  for (int i = 0; i < n_in; ++i)
    for (int r = 0; r < R; ++r) {
      const T wr = w[(o0 + r) * stride_o + i * stride_i];
      for (int n = 0; n < N; ++n) acc[r][n] += wr * x[i].v[n];
    }
  for (int r = 0; r < R; ++r)
    for (int n = 0; n < N; ++n) {
      Reg<T> a = acc[r][n];
      if (relu) a = a > zero ? a : zero;
      if (mask) a = mask[o0 + r].v[n] > zero ? a : zero;
      z[o0 + r].v[n] = a;
    }
}

template <typename T>
inline void dense_all(const T* w, int stride_o, int stride_i, const T* b, int n_in, int n_out,
                      const Vec<T>* x, Vec<T>* z, bool relu, const Vec<T>* mask) {
  int o = 0;
  for (; o + TILE<T> <= n_out; o += TILE<T>)
    dense<T, TILE<T>>(w, stride_o, stride_i, b, n_in, x, z, o, relu, mask);
  for (; o < n_out; ++o) dense<T, 1>(w, stride_o, stride_i, b, n_in, x, z, o, relu, mask);
}

// Training of an MLP over chunks of CHUNK blocks. Each block's activations and gradients
// stay until the chunk's weight gradients are summed as outer products, register tile by
// register tile; the lane sums of the gradients are then read and written once per chunk
// instead of once per block (that traffic was half the time of the ARM kernel).
template <typename T>
struct Trainer {
  static constexpr int CHUNK = 8;
  static constexpr int FLUSH_CHUNKS = 64;  // chunks between flushes of the lane sums

  const Mlp<T>& net;
  int64_t act_off[MAX_LAYERS + 1], grad_off[MAX_LAYERS], per_block = 0;
  std::vector<Vec<T>> buf, input_grad;
  std::vector<Reg<T>> acc;  // lane sums of the parameters' gradients
  int64_t chunks = 0;

  Trainer(const Mlp<T>& m, bool grads) : net(m) {
    for (int k = 0; k <= net.n_layers; ++k) {
      act_off[k] = per_block;
      per_block += net.widths[k];
    }
    for (int k = 0; k < net.n_layers; ++k) {
      grad_off[k] = per_block;
      per_block += net.widths[k + 1];
    }
    buf.resize((grads ? CHUNK : 1) * per_block);
    input_grad.resize(net.widths[0]);
    acc.resize(grads ? net.size : 0);
  }

  // block b's inputs (k = 0) or layer k's outputs, and the gradient of layer k's outputs
  Vec<T>* act(int b, int k) { return buf.data() + b * per_block + act_off[k]; }
  Vec<T>* grad(int b, int k) { return buf.data() + b * per_block + grad_off[k]; }

  void forward(int b) {
    for (int k = 0; k < net.n_layers; ++k) {
      const int in = net.widths[k], out = net.widths[k + 1];
      const T* w = net.params + net.offsets[k];
      dense_all<T>(w, in, 1, w + out * in, in, out, act(b, k), act(b, k + 1), k < net.n_layers - 1,
                   nullptr);
    }
  }

  // From grad(b, n_layers - 1), set by the caller: the other layers' gradients, and the
  // inputs' one, returned (widths[0] Vecs, valid until the next call).
  Vec<T>* backward(int b) {
    for (int k = net.n_layers - 1; k >= 0; --k) {
      const int in = net.widths[k], out = net.widths[k + 1];
      Vec<T>* dst = k > 0 ? grad(b, k - 1) : input_grad.data();
      // w^T g, through the ReLU that made the layer's inputs (but for the MLP's inputs)
      dense_all<T>(net.params + net.offsets[k], 1, in, nullptr, out, in, grad(b, k), dst, false,
                   k > 0 ? act(b, k) : nullptr);
    }
    return input_grad.data();
  }

  // gw[(o0 + ro) * in + i0 + ri] += sum over blocks and lanes of g[o0 + ro] a[i0 + ri]
  template <int RO, int RI>
  void tile(int k, int o0, int i0, int nb) {
    const int in = net.widths[k];
    Reg<T> s[RO][RI] = {};
    for (int b = 0; b < nb; ++b) {
      const Vec<T>* g = grad(b, k) + o0;
      const Vec<T>* a = act(b, k) + i0;
      for (int n = 0; n < NV<T>; ++n)
        for (int ro = 0; ro < RO; ++ro)
          for (int ri = 0; ri < RI; ++ri) s[ro][ri] += g[ro].v[n] * a[ri].v[n];
    }
    Reg<T>* gw = acc.data() + net.offsets[k];
    for (int ro = 0; ro < RO; ++ro)
      for (int ri = 0; ri < RI; ++ri) gw[(o0 + ro) * in + i0 + ri] += s[ro][ri];
  }

  template <int RO>
  void tile_row(int k, int o0, int nb) {
    int i = 0;
    for (; i + 4 <= net.widths[k]; i += 4) tile<RO, 4>(k, o0, i, nb);
    for (; i < net.widths[k]; ++i) tile<RO, 1>(k, o0, i, nb);
  }

  // adds the parameters' gradients of blocks 0 .. nb - 1 to the lane sums
  void weight_grads(int nb) {
    for (int k = 0; k < net.n_layers; ++k) {
      const int in = net.widths[k], out = net.widths[k + 1];
      Reg<T>* gb = acc.data() + net.offsets[k] + out * in;
      for (int o = 0; o < out; ++o)
        for (int b = 0; b < nb; ++b)
          for (int n = 0; n < NV<T>; ++n) gb[o] += grad(b, k)[o].v[n];
      int o = 0;
      for (; o + 4 <= out; o += 4) tile_row<4>(k, o, nb);
      for (; o < out; ++o) tile_row<1>(k, o, nb);
    }
  }

  void end_chunk(int nb, double* out) {
    weight_grads(nb);
    if (++chunks % FLUSH_CHUNKS == 0) flush(out);
  }

  // adds the lane sums to the double gradients and clears them
  void flush(double* out) {
    constexpr int R = VBYTES / sizeof(T);
    for (int64_t j = 0; j < net.size; ++j) {
      double sum = 0;
      for (int lane = 0; lane < R; ++lane) sum += acc[j][lane];
      out[j] += sum;
      acc[j] = Reg<T>{};
    }
  }
};

// Bits of y under the discretized Laplace(mu, exp(log_scale)) (fused._laplace_rate: the
// same formula, operation for operation) summed over valid lanes; with grads, g0 and g1
// receive d bits / d mu and d bits / d log_scale.
template <typename T>
double laplace(const T* __restrict y, const T* __restrict valid, const T* __restrict mu,
               const T* __restrict log_scale, T ls_min, T ls_max, T min_prob, bool grads,
               T* __restrict g0, T* __restrict g1) {
  T bits = 0;
  const T kscale = T(-0.5 / LN2);
  for (int lane = 0; lane < L; ++lane) {
    const T d = mu[lane] - y[lane];
    const T a = std::abs(d);
    const T ls = log_scale[lane];
    const T clamped = std::min(std::max(ls, ls_min), ls_max);
    const T nt = -std::exp(-clamped);  // -1 / scale
    const T ap = a + T(0.5), am = a - T(0.5);
    const T e1 = std::exp(ap * nt), e2 = std::exp(std::abs(am) * nt);
    const T e21 = e2 - e1;
    const T p = am < T(0) ? T(1) - T(0.5) * (e1 + e2) : T(0.5) * e21;
    const T pf = std::max(p, min_prob);
    bits -= std::log2(pf) * valid[lane];
    if (grads) {
      const T k = (p >= min_prob ? valid[lane] : T(0)) / pf * kscale;
      g0[lane] = std::copysign(e21 * nt * k, d);
      g1[lane] = clamped == ls ? (ap * e1 - am * e2) * k * nt : T(0);
    }
  }
  return bits;
}

// Work is split into PARTS fixed pieces (ARM positions, synthesis rows), each with its own
// accumulators, summed in part order at the end: the result depends on the pieces, never
// on how many threads ran them (determinism across thread counts). threads <= PARTS.
constexpr int PARTS = 4;

// f(k) for k = 0 .. parts - 1 on `threads` threads (thread t runs k = t, t + threads, ...).
// Threads are joined, never spun on: a busy core delays a step, it does not stall it.
template <typename F>
void run_parts(int parts, int threads, F f) {
  threads = std::max(1, std::min(threads, parts));
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t)
    pool.emplace_back([&f, t, parts, threads] {
      for (int k = t; k < parts; k += threads) f(k);
    });
  for (int k = 0; k < parts; k += threads) f(k);
  for (auto& th : pool) th.join();
}

// One part of the ARM rate: positions lo .. hi - 1 (lo a block boundary). Context
// gradients that land below `spill_from` (the previous part's positions) go to `spill`,
// which holds positions spill_from + min_off .. spill_from - 1, instead of grad_canvas.
template <typename T>
struct ArmPart {
  double total = 0;
  std::vector<double> grad_params;
  std::vector<T> spill;
};

template <typename T>
void arm_rate_part(const T* canvas, const T* valid, int64_t lo, int64_t hi, const int64_t* offsets,
                   const Mlp<T>& net, T ls_min, T ls_max, T min_prob, T* grad_canvas,
                   int64_t spill_from, int64_t min_off, ArmPart<T>& part) {
  const int context = net.widths[0];
  const int n_layers = net.n_layers;
  const bool grads = grad_canvas != nullptr;
  Trainer<T> tr(net, grads);
  if (grads) {
    part.grad_params.assign(net.size, 0.0);
    part.spill.assign(-min_off, T(0));
  }
  double* gp = part.grad_params.data();
  T* spill = part.spill.data() - (spill_from + min_off);  // spill[i] for position i
  alignas(64) T y[L], v[L];
  double total = 0;
  int b = 0;  // blocks of the current chunk
  for (int64_t p = lo; p < hi; p += L) {
    const int cnt = static_cast<int>(std::min<int64_t>(L, hi - p));
    bool any = false;  // blocks of padding only (12% at 768x512) add nothing: skip them
    for (int lane = 0; lane < cnt; ++lane) any |= valid[p + lane] != T(0);
    if (!any) continue;
    T* x = lanes<T>(tr.act(b, 0));
    if (cnt == L) {
      for (int c = 0; c < context; ++c) {
        const T* src = canvas + p + offsets[c];
        for (int lane = 0; lane < L; ++lane) x[c * L + lane] = src[lane];
      }
      for (int lane = 0; lane < L; ++lane) {
        y[lane] = canvas[p + lane];
        v[lane] = valid[p + lane];
      }
    } else {  // the last block: missing lanes are padding
      for (int lane = 0; lane < L; ++lane) {
        const bool in = lane < cnt;
        for (int c = 0; c < context; ++c) x[c * L + lane] = in ? canvas[p + lane + offsets[c]] : T(0);
        y[lane] = in ? canvas[p + lane] : T(0);
        v[lane] = in ? valid[p + lane] : T(0);
      }
    }
    tr.forward(b);
    const T* out = lanes<T>(tr.act(b, n_layers));
    T* g_out = lanes<T>(tr.grad(b, n_layers - 1));
    total += laplace(y, v, out, out + L, ls_min, ls_max, min_prob, grads, g_out, g_out + L);
    if (!grads) continue;
    T* gy = grad_canvas + p;
    for_lanes(cnt, [&](int lane) { gy[lane] -= g_out[lane]; });  // -d bits / d mu
    const T* gx = lanes<T>(tr.backward(b));
    for (int c = 0; c < context; ++c) {  // contexts were shifted reads: add back shifted
      const int64_t q = p + offsets[c];
      const T* g = gx + c * L;
      if (q >= spill_from) {
        T* dst = grad_canvas + q;
        for_lanes(cnt, [&](int lane) { dst[lane] += g[lane]; });
      } else {
        for_lanes(cnt, [&](int lane) { (q + lane < spill_from ? spill : grad_canvas)[q + lane] += g[lane]; });
      }
    }
    if (++b == Trainer<T>::CHUNK) {
      tr.end_chunk(b, gp);
      b = 0;
    }
  }
  if (b) tr.end_chunk(b, gp);
  if (grads) tr.flush(gp);
  part.total = total;
}

template <typename T>
double arm_rate(const T* canvas, const T* valid, int64_t start, int64_t n, const int64_t* offsets,
                int n_layers, const int64_t* widths, const T* params, T ls_min, T ls_max, T min_prob,
                T* grad_canvas, double* grad_params, int threads) {
  const Mlp<T> net(n_layers, widths, params);
  const int64_t stop = start + n;
  int64_t min_off = 0;
  for (int c = 0; c < widths[0]; ++c) min_off = std::min(min_off, offsets[c]);
  // cut where the count of latents (valid positions) reaches k / PARTS of the total, on
  // block boundaries; contexts are causal (all offsets < 0), so a part only reads and
  // writes positions before its own or in them
  const int64_t blocks = (n + L - 1) / L;
  std::vector<int64_t> per_block(blocks);
  int64_t latents = 0;
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t p = start + blk * L, e = std::min(stop, p + L);
    int64_t cnt = 0;
    for (int64_t i = p; i < e; ++i) cnt += valid[i] != T(0);
    per_block[blk] = cnt;
    latents += cnt;
  }
  std::vector<int64_t> cut{start};
  int64_t seen = 0;
  for (int64_t blk = 0; blk < blocks && int(cut.size()) < PARTS; ++blk) {
    seen += per_block[blk];
    if (seen * PARTS >= latents * int64_t(cut.size()) && blk + 1 < blocks) cut.push_back(start + (blk + 1) * L);
  }
  cut.push_back(stop);
  const int parts = int(cut.size()) - 1;
  std::vector<ArmPart<T>> out(parts);
  run_parts(parts, threads, [&](int k) {
    arm_rate_part(canvas, valid, cut[k], cut[k + 1], offsets, net, ls_min, ls_max, min_prob,
                  grad_canvas, k == 0 ? std::numeric_limits<int64_t>::min() / 2 : cut[k],
                  min_off, out[k]);
  });
  double total = 0;
  for (int k = 0; k < parts; ++k) {
    total += out[k].total;
    if (!grad_canvas) continue;
    for (int64_t j = 0; j < net.size; ++j) grad_params[j] += out[k].grad_params[j];
    if (k == 0) continue;
    T* dst = grad_canvas + cut[k] + min_off;
    for (int64_t i = 0; i < -min_off; ++i) dst[i] += out[k].spill[i];
  }
  return total;
}

// Upsampling taps (coolchic/model/upsampling.py): even outputs read inputs j-2 .. j+1,
// odd outputs j-1 .. j+2 with the taps reversed; indices clamped to the axis. Every caller
// passes its level's 4 taps (bicubic or learned).
// Output row r of a 2x pass along an axis of n inputs: the 4 input rows it reads, the tap
// each is weighted by, and which of the level's 4 taps that is (index[t]).
struct Upsample {
  int64_t rows[4];
  double taps[4];
  int index[4];
  Upsample(int64_t r, int64_t n, const double* level) {
    const int64_t j = r / 2, phase = r % 2;
    for (int t = 0; t < 4; ++t) {
      rows[t] = std::min(std::max<int64_t>(j - 2 + phase + t, 0), n - 1);
      index[t] = phase ? 3 - t : t;
      taps[t] = level[index[t]];
    }
  }
};

template <typename T>
inline Reg<T> load(const T* p) {
  Reg<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// the first n lanes of v to p
template <typename T>
inline void store(T* p, Reg<T> v, int64_t n) {
  constexpr int VL = VBYTES / sizeof(T);
  if (n >= VL) {
    std::memcpy(p, &v, sizeof v);
  } else {
    std::memcpy(p, &v, n * sizeof(T));
  }
}

// One output row of a 3x3 convolution (NC -> NC channels, weight (NC, NC, 3, 3)) and its
// adjoint, on rows padded with one replicated column each side (image column c at c + 1)
// and readable one register beyond. Each VL-pixel chunk of all output channels is summed
// in registers (NC * NC * 9 multiply-adds) and stored once.
template <typename T, int NC>
struct ConvRow {
  static constexpr int VL = VBYTES / sizeof(T);

  // out[o][c] = res[o][c] + b[o] + sum w[o, i, ky, kx] src[i * 3 + ky][c + kx], c < W
  static void forward(const T* const* src, const T* const* res, T* const* out, const T* w,
                      const T* b, int64_t W) {
    for (int64_t c = 0; c < W; c += VL) {
      Reg<T> acc[NC];
      for (int o = 0; o < NC; ++o) acc[o] = load(res[o] + c) + b[o];
      for (int i = 0; i < NC; ++i)
        for (int ky = 0; ky < 3; ++ky) {
          const T* x = src[i * 3 + ky] + c;
          const Reg<T> x0 = load(x), x1 = load(x + 1), x2 = load(x + 2);
          for (int o = 0; o < NC; ++o) {
            const T* wk = w + ((o * NC + i) * 3 + ky) * 3;
            acc[o] += wk[0] * x0 + wk[1] * x1 + wk[2] * x2;
          }
        }
      for (int o = 0; o < NC; ++o) store(out[o] + c, acc[o], W - c);
    }
  }

  // Given gz[o] (the gradient of out[o], at gz[o] + 2, zero around), adds the weights' and
  // biases' gradients to the lane sums wacc (NC * NC * 9) and bacc (NC), and the adjoint
  // of the taps to the padded gradient rows dst[i * 3 + ky] (rows may repeat: clamped).
  static void backward(const T* const* gz, const T* const* src, T* const* dst, const T* w,
                       Reg<T>* wacc, Reg<T>* bacc, int64_t W) {
    for (int i = 0; i < NC; ++i)
      for (int ky = 0; ky < 3; ++ky) {
        Reg<T> s[NC][3] = {};
        const T* x = src[i * 3 + ky];
        for (int64_t c = 0; c < W; c += VL) {  // gz is zero past W
          const Reg<T> x0 = load(x + c), x1 = load(x + c + 1), x2 = load(x + c + 2);
          for (int o = 0; o < NC; ++o) {
            const Reg<T> g = load(gz[o] + 2 + c);
            s[o][0] += g * x0;
            s[o][1] += g * x1;
            s[o][2] += g * x2;
          }
        }
        for (int o = 0; o < NC; ++o)
          for (int kx = 0; kx < 3; ++kx) wacc[((o * NC + i) * 3 + ky) * 3 + kx] += s[o][kx];
      }
    for (int o = 0; o < NC; ++o)
      for (int64_t c = 0; c < W; c += VL) bacc[o] += load(gz[o] + 2 + c);
    // dst[p] += w[kx] g[p - kx], p = 0 .. W + 1
    for (int i = 0; i < NC; ++i)
      for (int ky = 0; ky < 3; ++ky) {
        T* d = dst[i * 3 + ky];
        for (int64_t p = 0; p < W + 2; p += VL) {
          Reg<T> acc = load(d + p);
          for (int o = 0; o < NC; ++o) {
            const T* wk = w + ((o * NC + i) * 3 + ky) * 3;
            const T* g = gz[o] + p;
            acc += wk[0] * load(g + 2) + wk[1] * load(g + 1) + wk[2] * load(g);
          }
          store(d + p, acc, W + 2 - p);
        }
      }
  }
};

// The synthesis (per-pixel MLP, then residual 3x3 convolutions with replicated borders) of
// the latents, and the sum of its squared errors against the image, band by band of rows;
// see fused._synthesis_mse. Images are (C, H, W); activations are kept with one replicated
// column on each side and zero slack after, rows of rs() >= W + 2 + VL values, so every
// convolution tap is a contiguous, vector-loadable slice. NC = C (1 to 4).
template <typename T, int NC>
struct Synthesis {
  const T* finest;   // (H, W)
  const T* coarser;  // (K, hc, W): grids 1.. upsampled but for the last vertical 2x
  int64_t K, hc;
  const T* image;  // (C, H, W)
  int64_t C, H, W;
  Mlp<T> mlp;
  int n_conv;
  const T* conv;  // per convolution: weight (C, C, 3, 3) then bias (C)
  T scale;        // d loss / d x_hat = scale * (x_hat - image)
  T* grad_finest;
  T* grad_coarser;
  double* grad_mlp;
  double* grad_conv;
  const double* vtaps;  // the 4 taps of the last vertical 2x pass
  double* grad_vtaps;   // their gradient (4), or nullptr: not wanted

  static constexpr int VL = VBYTES / sizeof(T);
  int64_t rs() const { return (W + 2 + VL - 1) / VL * VL + VL; }

  // MLP inputs of pixels (r, c0 .. c0 + cnt - 1) into x (widths[0] Vecs)
  void inputs(Vec<T>* xv, int64_t r, int64_t c0, int cnt) const {
    T* x = lanes<T>(xv);
    const T* f = finest + r * W + c0;
    for (int lane = 0; lane < L; ++lane) x[lane] = lane < cnt ? f[lane] : T(0);
    if (K == 0) return;
    const Upsample up(r, hc, vtaps);
    for (int64_t k = 0; k < K; ++k) {
      const T* base = coarser + k * hc * W + c0;
      T* dst = x + (k + 1) * L;
      if (cnt == L) {
        const T *s0 = base + up.rows[0] * W, *s1 = base + up.rows[1] * W;
        const T *s2 = base + up.rows[2] * W, *s3 = base + up.rows[3] * W;
        const T t0 = up.taps[0], t1 = up.taps[1], t2 = up.taps[2], t3 = up.taps[3];
        for (int lane = 0; lane < L; ++lane)
          dst[lane] = t0 * s0[lane] + t1 * s1[lane] + t2 * s2[lane] + t3 * s3[lane];
      } else {
        for (int lane = 0; lane < L; ++lane) {
          T s = 0;
          if (lane < cnt)
            for (int t = 0; t < 4; ++t) s += T(up.taps[t]) * base[up.rows[t] * W + lane];
          dst[lane] = s;
        }
      }
    }
  }

  // Where a part adds the inputs' gradient of each row: grad_finest's and grad_coarser's
  // own rows, or the part's spill rows for rows that other parts touch as well.
  struct Part {
    std::vector<T*> finest_row, coarser_row;  // per row of finest (H) and of coarser (K hc)
    std::vector<T> spill;
    std::vector<std::pair<T*, T*>> spilled;  // (output row, spill row) pairs, W each
    double total = 0;
    std::vector<double> grad_mlp, grad_conv;
    double grad_vtaps[4] = {0, 0, 0, 0};
  };

  // the inputs' gradient of pixels (r, c0 ..) into the part's rows
  void scatter_inputs(Part& part, const T* gx, int64_t r, int64_t c0, int cnt) const {
    T* f = part.finest_row[r] + c0;
    for_lanes(cnt, [&](int lane) { f[lane] += gx[lane]; });
    if (K == 0) return;
    const Upsample up(r, hc, vtaps);
    for (int64_t k = 0; k < K; ++k) {
      const T* g = gx + (k + 1) * L;
      for (int t = 0; t < 4; ++t) {
        T* dst = part.coarser_row[k * hc + up.rows[t]] + c0;
        const T tap = up.taps[t];
        for_lanes(cnt, [&](int lane) { dst[lane] += tap * g[lane]; });
        if (grad_vtaps != nullptr) {  // d loss / d tap: the gradient times the input it weighs
          const T* src = coarser + (k * hc + up.rows[t]) * W + c0;
          T s = 0;
          for_lanes(cnt, [&](int lane) { s += g[lane] * src[lane]; });
          part.grad_vtaps[up.index[t]] += double(s);
        }
      }
    }
  }

  // replicate the edge columns of rows lo .. hi - 1 of a (C, rows, rs) buffer
  void pad_columns(T* z, int64_t rows, int64_t lo, int64_t hi) const {
    for (int64_t ch = 0; ch < C; ++ch)
      for (int64_t r = lo; r < hi; ++r) {
        T* row = z + (ch * rows + r) * rs();
        row[0] = row[1];
        row[W + 1] = row[W];
      }
  }

  // rows lo .. hi - 1 of the image, in bands of band_rows
  void run_part(int64_t lo_row, int64_t hi_row, int64_t band_rows, Part& part) const {
    const bool grads = grad_finest != nullptr;
    const int64_t max_rows = std::min(H, band_rows + 2 * n_conv);
    const int64_t plane = max_rows * rs();
    // z[j]: input of convolution j (z[n_conv]: the output); g[j]: its gradient
    std::vector<T> zbuf((n_conv + 1) * C * plane), gbuf(grads ? (n_conv + 1) * C * plane : 0);
    Trainer<T> tr(mlp, grads);
    std::vector<Reg<T>> conv_acc(grads ? n_conv * NC * (9 * NC + 1) : 0);
    std::vector<T> gz(NC * (rs() + 4));  // zero-padded gradient rows, see ConvRow::backward
    if (grads) part.grad_mlp.assign(mlp.size, 0.0);
    double total = 0;
    double* grad_mlp = part.grad_mlp.data();
    const int64_t last = mlp.n_layers;
    for (int64_t r0 = lo_row; r0 < hi_row; r0 += band_rows) {
      const int64_t r1 = std::min(hi_row, r0 + band_rows);
      const int64_t a = std::max<int64_t>(0, r0 - n_conv), b = std::min(H, r1 + n_conv);
      const int64_t rows = b - a;  // buffer row i holds image row a + i
      auto zat = [&](int j, int64_t ch, int64_t r) { return zbuf.data() + (j * C + ch) * plane + (r - a) * rs(); };
      auto gat = [&](int j, int64_t ch, int64_t r) { return gbuf.data() + (j * C + ch) * plane + (r - a) * rs(); };
      auto rows3 = [&](auto at, int j, int64_t r, T** out) {  // the rows each ky reads
        for (int i = 0; i < NC; ++i)
          for (int ky = 0; ky < 3; ++ky) out[i * 3 + ky] = at(j, i, std::min(std::max<int64_t>(r + ky - 1, 0), H - 1));
      };
      // MLP over rows a .. b - 1
      for (int64_t r = a; r < b; ++r)
        for (int64_t c0 = 0; c0 < W; c0 += L) {
          const int cnt = static_cast<int>(std::min<int64_t>(L, W - c0));
          inputs(tr.act(0, 0), r, c0, cnt);
          tr.forward(0);
          for (int64_t ch = 0; ch < C; ++ch) {
            T* dst = zat(0, ch, r) + 1 + c0;
            const T* src = lanes<T>(tr.act(0, last)) + ch * L;
            for_lanes(cnt, [&](int lane) { dst[lane] = src[lane]; });
          }
        }
      pad_columns(zbuf.data(), max_rows, 0, rows);
      // residual convolutions: each loses a row at a band edge that is not an image edge
      std::vector<int64_t> lo(n_conv + 1), hi(n_conv + 1);
      lo[0] = a;
      hi[0] = b;
      for (int j = 0; j < n_conv; ++j) {
        lo[j + 1] = lo[j] == 0 ? 0 : lo[j] + 1;
        hi[j + 1] = hi[j] == H ? H : hi[j] - 1;
        const T* w = conv + j * C * (9 * C + 1);
        const T* bias = w + 9 * C * C;
        for (int64_t r = lo[j + 1]; r < hi[j + 1]; ++r) {
          T* src[3 * NC];
          const T* res[NC];
          T* out[NC];
          rows3(zat, j, r, src);
          for (int o = 0; o < NC; ++o) {
            res[o] = zat(j, o, r) + 1;
            out[o] = zat(j + 1, o, r) + 1;
          }
          ConvRow<T, NC>::forward(src, res, out, w, bias, W);
        }
        pad_columns(zbuf.data() + (j + 1) * C * plane, max_rows, lo[j + 1] - a, hi[j + 1] - a);
      }
      // squared error on rows r0 .. r1 - 1, and its gradient
      for (int64_t ch = 0; ch < C; ++ch)
        for (int64_t r = r0; r < r1; ++r) {
          const T* __restrict z = zat(n_conv, ch, r) + 1;
          const T* __restrict im = image + (ch * H + r) * W;
          T s = 0;
          for (int64_t c = 0; c < W; ++c) {
            const T d = z[c] - im[c];
            s += d * d;
          }
          total += s;
          if (grads) {
            T* __restrict g = gat(n_conv, ch, r) + 1;
            for (int64_t c = 0; c < W; ++c) g[c] = scale * (z[c] - im[c]);
          }
        }
      if (!grads) continue;
      for (int64_t ch = 0; ch < C; ++ch)
        for (int64_t r = lo[n_conv]; r < hi[n_conv]; ++r)
          if (r < r0 || r >= r1) std::fill(gat(n_conv, ch, r) + 1, gat(n_conv, ch, r) + 1 + W, T(0));
      // backward through the convolutions: g[j] (padded) = residual + adjoint of the taps
      for (int j = n_conv - 1; j >= 0; --j) {
        const T* w = conv + j * C * (9 * C + 1);
        Reg<T>* wacc = conv_acc.data() + j * NC * (9 * NC + 1);
        for (int64_t ch = 0; ch < C; ++ch)
          for (int64_t r = lo[j]; r < hi[j]; ++r) std::fill(gat(j, ch, r), gat(j, ch, r) + W + 2, T(0));
        for (int64_t r = lo[j + 1]; r < hi[j + 1]; ++r) {
          const T* gzr[NC];
          for (int o = 0; o < NC; ++o) {
            const T* g = gat(j + 1, o, r) + 1;
            T* res = gat(j, o, r) + 1;
            for (int64_t c = 0; c < W; ++c) res[c] += g[c];  // the residual branch
            std::copy(g, g + W, gz.data() + o * (rs() + 4) + 2);
            gzr[o] = gz.data() + o * (rs() + 4);
          }
          T* src[3 * NC];
          T* dst[3 * NC];
          rows3(zat, j, r, src);
          rows3(gat, j, r, dst);
          ConvRow<T, NC>::backward(gzr, src, dst, w, wacc, wacc + 9 * NC * NC, W);
        }
        // fold the replicated columns back into the edge columns
        for (int64_t ch = 0; ch < C; ++ch)
          for (int64_t r = lo[j]; r < hi[j]; ++r) {
            T* row = gat(j, ch, r);
            row[1] += row[0];
            row[W] += row[W + 1];
          }
      }
      // backward through the MLP, block by block (recomputing its activations)
      int nb = 0;
      for (int64_t r = a; r < b; ++r)
        for (int64_t c0 = 0; c0 < W; c0 += L) {
          const int cnt = static_cast<int>(std::min<int64_t>(L, W - c0));
          inputs(tr.act(nb, 0), r, c0, cnt);
          tr.forward(nb);
          for (int64_t ch = 0; ch < C; ++ch) {
            const T* src = gat(0, ch, r) + 1 + c0;
            T* dst = lanes<T>(tr.grad(nb, last - 1)) + ch * L;
            for (int lane = 0; lane < L; ++lane) dst[lane] = lane < cnt ? src[lane] : T(0);
          }
          scatter_inputs(part, lanes<T>(tr.backward(nb)), r, c0, cnt);
          if (++nb == Trainer<T>::CHUNK) {
            tr.end_chunk(nb, grad_mlp);
            nb = 0;
          }
        }
      if (nb) tr.end_chunk(nb, grad_mlp);
    }
    part.total = total;
    if (grads) {
      tr.flush(grad_mlp);
      part.grad_conv.assign(conv_acc.size(), 0.0);
      for (size_t k = 0; k < conv_acc.size(); ++k)
        for (int lane = 0; lane < VL; ++lane) part.grad_conv[k] += conv_acc[k][lane];
    }
  }

  // The rows (of finest, 0 .. H - 1, and of coarser, H + k hc + row) whose inputs a part
  // of image rows lo .. hi - 1 reads: its bands' rows with the convolutions' halo.
  void touched(int64_t lo, int64_t hi, std::vector<int64_t>& rows) const {
    rows.clear();
    const int64_t a = std::max<int64_t>(0, lo - n_conv), b = std::min(H, hi + n_conv);
    for (int64_t r = a; r < b; ++r) rows.push_back(r);
    if (K == 0) return;
    const int64_t c_lo = Upsample(a, hc, vtaps).rows[0], c_hi = Upsample(b - 1, hc, vtaps).rows[3];
    for (int64_t k = 0; k < K; ++k)
      for (int64_t r = c_lo; r <= c_hi; ++r) rows.push_back(H + k * hc + r);
  }

  // image rows split in up to PARTS parts, run on `threads` threads
  double run(int64_t band_rows, int threads) {
    const bool grads = grad_finest != nullptr;
    const int parts = static_cast<int>(std::min<int64_t>(PARTS, H));
    std::vector<int64_t> cut(parts + 1);
    for (int k = 0; k <= parts; ++k) cut[k] = H * k / parts;
    std::vector<Part> part(parts);
    if (grads) {  // rows read by several parts: the first writes them, the others spill
      std::vector<int> owner(H + K * hc, -1);
      std::vector<int64_t> rows;
      for (int k = 0; k < parts; ++k) {
        Part& p = part[k];
        p.finest_row.resize(H);
        p.coarser_row.resize(K * hc);
        touched(cut[k], cut[k + 1], rows);
        int64_t n_spill = 0;
        for (int64_t r : rows) n_spill += owner[r] >= 0;
        p.spill.assign(n_spill * W, T(0));
        int64_t s = 0;
        for (int64_t r : rows) {
          T* own = r < H ? grad_finest + r * W : grad_coarser + (r - H) * W;
          T* dst = own;
          if (owner[r] >= 0) {
            dst = p.spill.data() + (s++) * W;
            p.spilled.emplace_back(own, dst);
          } else {
            owner[r] = k;
          }
          (r < H ? p.finest_row[r] : p.coarser_row[r - H]) = dst;
        }
      }
    }
    // bands of at most band_rows, evened out within a part
    run_parts(parts, threads, [&](int k) {
      const int64_t n = cut[k + 1] - cut[k], bands = std::max<int64_t>(1, (n + band_rows - 1) / band_rows);
      run_part(cut[k], cut[k + 1], (n + bands - 1) / bands, part[k]);
    });
    double total = 0;
    for (const Part& p : part) {
      total += p.total;
      if (!grads) continue;
      for (size_t j = 0; j < p.grad_mlp.size(); ++j) grad_mlp[j] += p.grad_mlp[j];
      for (size_t j = 0; j < p.grad_conv.size(); ++j) grad_conv[j] += p.grad_conv[j];
      if (grad_vtaps != nullptr)
        for (int t = 0; t < 4; ++t) grad_vtaps[t] += p.grad_vtaps[t];
      for (const auto& [own, sp] : p.spilled)
        for (int64_t c = 0; c < W; ++c) own[c] += sp[c];
    }
    return total;
  }
};

template <typename T>
double synthesis_mse(const T* finest, const T* coarser, int64_t K, int64_t hc, const T* image,
                     int64_t C, int64_t H, int64_t W, int n_mlp, const int64_t* widths,
                     const T* mlp_params, int n_conv, const T* conv_params, int64_t band_rows,
                     T* grad_finest, T* grad_coarser, double* grad_mlp, double* grad_conv,
                     const double* vtaps, double* grad_vtaps, int threads) {
  auto run = [&](auto nc) {
    Synthesis<T, decltype(nc)::value> s{finest, coarser, K, hc, image, C, H, W,
                                        Mlp<T>(n_mlp, widths, mlp_params), n_conv, conv_params,
                                        T(2.0 / double(C * H * W)), grad_finest, grad_coarser,
                                        grad_mlp, grad_conv, vtaps, grad_vtaps};
    return s.run(band_rows, threads);
  };
  switch (C) {
    case 1: return run(std::integral_constant<int, 1>{});
    case 2: return run(std::integral_constant<int, 2>{});
    case 3: return run(std::integral_constant<int, 3>{});
    case 4: return run(std::integral_constant<int, 4>{});
    default: return -1.0;  // refused: the caller checks C <= 4
  }
}

// The cascade of 2x upsamplings of coolchic.model.upsampling (upsample_stack): grids
// 1 .. K, coarsest last, to grid 1's size, stacked finest first, then 2x horizontally to
// the width W0. Output x of an axis of length n reads inputs x/2 - 2 + x%2 + t, t = 0..3,
// clamped to 0 .. n-1, with the level's taps (even x) or the taps reversed (odd x); the step
// into grid l (l = 0 for the last horizontal pass) uses taps[4 l .. 4 l + 3]. The cascade
// is linear in the grids: its adjoint needs only the shapes, plus the grids themselves for
// the gradient of the taps.
template <typename T>
struct Cascade {
  int K;
  const int64_t* shapes;  // (K, 2): (h, w) of grids 1 .. K
  int64_t W0;
  const double* taps;  // (K, 4): level l upsamples into grid l

  int64_t h(int k) const { return shapes[2 * k]; }
  int64_t w(int k) const { return shapes[2 * k + 1]; }
  const double* level(int l) const { return taps + 4 * l; }

  // out[0 .. m) = 2x upsampling of in[0 .. n); pad: n + 4 scratch
  static void up_row(const T* in, int64_t n, T* __restrict out, int64_t m, T* __restrict pad,
                     const double* k) {
    const T t0 = T(k[0]), t1 = T(k[1]), t2 = T(k[2]), t3 = T(k[3]);
    for (int64_t i = 0; i < n + 4; ++i) pad[i] = in[std::min(std::max<int64_t>(i - 2, 0), n - 1)];
    const int64_t pairs = m / 2;
    for (int64_t j = 0; j < pairs; ++j) {  // pad[j + 2] is input j
      out[2 * j] = t0 * pad[j] + t1 * pad[j + 1] + t2 * pad[j + 2] + t3 * pad[j + 3];
      out[2 * j + 1] = t3 * pad[j + 1] + t2 * pad[j + 2] + t1 * pad[j + 3] + t0 * pad[j + 4];
    }
    if (m % 2) out[m - 1] = t0 * pad[pairs] + t1 * pad[pairs + 1] + t2 * pad[pairs + 2] + t3 * pad[pairs + 3];
  }

  // gt[0 .. 4) += d <out, g> / d taps of up_row(in); pad: n + 4 scratch
  static void up_row_taps(const T* in, int64_t n, const T* g, int64_t m, T* __restrict pad, double* gt) {
    for (int64_t i = 0; i < n + 4; ++i) pad[i] = in[std::min(std::max<int64_t>(i - 2, 0), n - 1)];
    T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    const int64_t pairs = m / 2;
    for (int64_t j = 0; j < pairs; ++j) {
      const T ge = g[2 * j], go = g[2 * j + 1];
      s0 += ge * pad[j] + go * pad[j + 4];
      s1 += ge * pad[j + 1] + go * pad[j + 3];
      s2 += ge * pad[j + 2] + go * pad[j + 2];
      s3 += ge * pad[j + 3] + go * pad[j + 1];
    }
    if (m % 2) {
      const T ge = g[m - 1];
      s0 += ge * pad[pairs];
      s1 += ge * pad[pairs + 1];
      s2 += ge * pad[pairs + 2];
      s3 += ge * pad[pairs + 3];
    }
    gt[0] += double(s0);
    gt[1] += double(s1);
    gt[2] += double(s2);
    gt[3] += double(s3);
  }

  // gin[0 .. n) = adjoint of up_row applied to g[0 .. m); gz: 2n + 16 scratch
  static void up_row_adjoint(const T* g, int64_t m, T* __restrict gin, int64_t n, T* __restrict gz,
                             const double* k) {
    const T t0 = T(k[0]), t1 = T(k[1]), t2 = T(k[2]), t3 = T(k[3]);
    // gz[x + 8] = g[x], zero outside: every padded input p = -2 .. n + 1 gathers from the
    // outputs 2p - 3 .. 2p + 4 that read it
    std::fill(gz, gz + 8, T(0));
    std::copy(g, g + m, gz + 8);
    std::fill(gz + 8 + m, gz + 16 + 2 * n, T(0));
    const T* z = gz + 8;
    T lo = 0, hi = 0;
    for (int64_t p = -2; p < n + 2; ++p) {
      const int64_t x = 2 * p;
      const T v = t0 * z[x + 4] + t1 * z[x + 2] + t2 * z[x] + t3 * z[x - 2] +
                  t3 * z[x + 3] + t2 * z[x + 1] + t1 * z[x - 1] + t0 * z[x - 3];
      if (p < 0) {
        lo += v;
      } else if (p >= n) {
        hi += v;
      } else {
        gin[p] = v;
      }
    }
    gin[0] += lo;  // the clamped reads
    gin[n - 1] += hi;
  }

  // rows: out row r (of m) = sum_t tap in row clamp(r/2 - 2 + r%2 + t) (of n); width cols
  static void up_rows(const T* in, int64_t n, T* __restrict out, int64_t m, int64_t cols, const double* k) {
    for (int64_t r = 0; r < m; ++r) {
      const Upsample u(r, n, k);
      const T *a = in + u.rows[0] * cols, *b = in + u.rows[1] * cols;
      const T *c = in + u.rows[2] * cols, *d = in + u.rows[3] * cols;
      const T ta = T(u.taps[0]), tb = T(u.taps[1]), tc = T(u.taps[2]), td = T(u.taps[3]);
      T* o = out + r * cols;
      for (int64_t i = 0; i < cols; ++i) o[i] = ta * a[i] + tb * b[i] + tc * c[i] + td * d[i];
    }
  }

  // gin = adjoint of up_rows applied to g; with gt, also gt[0 .. 4) += d <out, g> / d taps
  static void up_rows_adjoint(const T* g, int64_t m, T* __restrict gin, int64_t n, int64_t cols,
                              const double* k, const T* in, double* gt) {
    std::fill(gin, gin + n * cols, T(0));
    for (int64_t r = 0; r < m; ++r) {
      const Upsample u(r, n, k);
      const T* gr = g + r * cols;
      for (int t = 0; t < 4; ++t) {
        T* dst = gin + u.rows[t] * cols;
        const T tap = T(u.taps[t]);
        for (int64_t i = 0; i < cols; ++i) dst[i] += tap * gr[i];
        if (gt != nullptr) {
          const T* src = in + u.rows[t] * cols;
          T s = 0;
          for (int64_t i = 0; i < cols; ++i) s += gr[i] * src[i];
          gt[u.index[t]] += double(s);
        }
      }
    }
  }

  // The stacks of the forward pass: stacks[k] (k = 0 .. K - 1) holds channels k .. K - 1 at
  // grid k's size; rows[k] (k < K - 1) the channels k + 1 .. of stacks[k + 1] upsampled
  // along the rows only, (K - 1 - k, h(k + 1), w(k)).
  void stacks(const T* const* grids, std::vector<std::vector<T>>& stack,
              std::vector<std::vector<T>>& cols) const {
    stack.assign(K, {});
    cols.assign(K, {});
    stack[K - 1].assign(grids[K - 1], grids[K - 1] + h(K - 1) * w(K - 1));
    std::vector<T> pad(std::max(W0, w(0)) + 4);
    for (int k = K - 2; k >= 0; --k) {
      const int64_t ch = K - 1 - k, hi = h(k + 1), wi = w(k + 1), ho = h(k), wo = w(k);
      std::vector<T>& tmp = cols[k];
      tmp.resize(ch * hi * wo);
      for (int64_t r = 0; r < ch * hi; ++r)
        up_row(stack[k + 1].data() + r * wi, wi, tmp.data() + r * wo, wo, pad.data(), level(k + 1));
      std::vector<T>& next = stack[k];
      next.resize((ch + 1) * ho * wo);
      std::copy(grids[k], grids[k] + ho * wo, next.begin());
      for (int64_t c = 0; c < ch; ++c)
        up_rows(tmp.data() + c * hi * wo, hi, next.data() + (c + 1) * ho * wo, ho, wo, level(k + 1));
    }
  }

  // out: (K, h(0), W0)
  void forward(const T* const* grids, T* out) const {
    std::vector<std::vector<T>> stack, cols;
    stacks(grids, stack, cols);
    std::vector<T> pad(std::max(W0, w(0)) + 4);
    for (int64_t r = 0; r < K * h(0); ++r)
      up_row(stack[0].data() + r * w(0), w(0), out + r * W0, W0, pad.data(), level(0));
  }

  // grads[k] = d / d grid k of <out, g>; with grad_taps ((K, 4), added to), also the taps'
  // gradient, for which the forward pass is recomputed from `grids`
  void adjoint(const T* g, T* const* grads, const T* const* grids, double* grad_taps) const {
    std::vector<std::vector<T>> stack, cols;
    if (grad_taps != nullptr) stacks(grids, stack, cols);
    std::vector<T> acc(K * h(0) * w(0)), tmp, gz(2 * std::max(W0, w(0)) + 16), pad(std::max(W0, w(0)) + 4);
    for (int64_t r = 0; r < K * h(0); ++r) {
      up_row_adjoint(g + r * W0, W0, acc.data() + r * w(0), w(0), gz.data(), level(0));
      if (grad_taps != nullptr) up_row_taps(stack[0].data() + r * w(0), w(0), g + r * W0, W0, pad.data(), grad_taps);
    }
    for (int k = 0; k < K - 1; ++k) {  // acc: channels k .. K - 1 at grid k's size
      const int64_t ch = K - 1 - k, hi = h(k + 1), wi = w(k + 1), ho = h(k), wo = w(k);
      double* gt = grad_taps == nullptr ? nullptr : grad_taps + 4 * (k + 1);
      std::copy(acc.begin(), acc.begin() + ho * wo, grads[k]);
      tmp.resize(ch * hi * wo);
      for (int64_t c = 0; c < ch; ++c)
        up_rows_adjoint(acc.data() + (c + 1) * ho * wo, ho, tmp.data() + c * hi * wo, hi, wo, level(k + 1),
                        gt == nullptr ? nullptr : cols[k].data() + c * hi * wo, gt);
      std::vector<T> next(ch * hi * wi);
      for (int64_t r = 0; r < ch * hi; ++r) {
        up_row_adjoint(tmp.data() + r * wo, wo, next.data() + r * wi, wi, gz.data(), level(k + 1));
        if (gt != nullptr) up_row_taps(stack[k + 1].data() + r * wi, wi, tmp.data() + r * wo, wo, pad.data(), gt);
      }
      acc.swap(next);
    }
    std::copy(acc.begin(), acc.begin() + h(K - 1) * w(K - 1), grads[K - 1]);
  }
};

// Soft-rounding with noise, q = s(s(y) + n(u)), and dq/dy (coolchic.quant: soft_round,
// kumaraswamy_noise; u uniform on [0, 1)). shape_a == 0: u is the noise itself, added as it
// is (Gaussian noise drawn by the caller).
template <typename T>
void soft_round_noise(const T* __restrict y, const T* __restrict u, int64_t size, T temperature,
                      T shape_a, T shape_b, T* __restrict q, T* __restrict dq) {
  const T inv_t = T(1) / temperature;
  const T k = T(0.5) / std::tanh(T(0.5) * inv_t);  // s(x) = c + k tanh((x - c) / T)
  const T dk = k * inv_t;
  const T inv_a = T(1) / shape_a, inv_b = T(1) / shape_b;
  const auto round_at = [&](int64_t i, T noise) {  // q[i], dq[i] of y[i] with this noise
    const T c1 = std::floor(y[i]) + T(0.5);
    const T t1 = std::tanh((y[i] - c1) * inv_t);
    const T x = c1 + k * t1 + noise;
    const T c2 = std::floor(x) + T(0.5);
    const T t2 = std::tanh((x - c2) * inv_t);
    q[i] = c2 + k * t2;
    dq[i] = dk * (T(1) - t1 * t1) * dk * (T(1) - t2 * t2);
  };
  if (shape_a == T(0)) {
    for (int64_t i = 0; i < size; ++i) round_at(i, u[i]);
    return;
  }
  for (int64_t i = 0; i < size; ++i) {
    const T uc = std::min(std::max(u[i], T(1e-6)), T(1) - T(1e-6));
    // x^e as exp2(e log2 x), x in (0, 1]: 2.4x faster than the vectorized pow (measured);
    // the inner value kept above 0 so that log2 stays finite under -ffast-math
    const T inner = std::max(T(1) - std::exp2(inv_b * std::log2(T(1) - uc)), std::numeric_limits<T>::min());
    round_at(i, std::exp2(inv_a * std::log2(inner)) - T(0.5));
  }
}

}  // namespace

extern "C" {

int coolchic_kernels_version() { return 4; }
// SHA-256 of this file, passed by the build (coolchic.nativebuild): a library whose source
// has changed since it was built is not loaded.
#ifndef COOLCHIC_SOURCE_SHA
#define COOLCHIC_SOURCE_SHA ""
#endif
const char* coolchic_source_sha() { return COOLCHIC_SOURCE_SHA; }

#define ARM_RATE(NAME, T)                                                                      \
  double NAME(const T* canvas, const T* valid, int64_t start, int64_t n, const int64_t* offsets, \
              int n_layers, const int64_t* widths, const T* params, double ls_min, double ls_max, \
              double min_prob, T* grad_canvas, double* grad_params, int threads) {             \
    return arm_rate<T>(canvas, valid, start, n, offsets, n_layers, widths, params, T(ls_min),   \
                       T(ls_max), T(min_prob), grad_canvas, grad_params, threads);             \
  }
ARM_RATE(coolchic_arm_rate_f32, float)
ARM_RATE(coolchic_arm_rate_f64, double)

#define SYNTHESIS_MSE(NAME, T)                                                                  \
  double NAME(const T* finest, const T* coarser, int64_t K, int64_t hc, const T* image, int64_t C, \
              int64_t H, int64_t W, int n_mlp, const int64_t* widths, const T* mlp_params,      \
              int n_conv, const T* conv_params, int64_t band_rows, T* grad_finest,              \
              T* grad_coarser, double* grad_mlp, double* grad_conv, const double* vtaps,        \
              double* grad_vtaps, int threads) {                                                \
    return synthesis_mse<T>(finest, coarser, K, hc, image, C, H, W, n_mlp, widths, mlp_params,  \
                            n_conv, conv_params, band_rows, grad_finest, grad_coarser,          \
                            grad_mlp, grad_conv, vtaps, grad_vtaps, threads);                   \
  }
SYNTHESIS_MSE(coolchic_synthesis_mse_f32, float)
SYNTHESIS_MSE(coolchic_synthesis_mse_f64, double)

#define UPSAMPLE_STACK(NAME, T)                                                               \
  void NAME(int K, const int64_t* shapes, int64_t W0, const double* taps, const int64_t* grids, \
            T* out, const T* grad_out, const int64_t* grads, double* grad_taps) {             \
    const Cascade<T> c{K, shapes, W0, taps};                                                  \
    if (grad_out == nullptr) {                                                                \
      c.forward(reinterpret_cast<const T* const*>(grids), out);                               \
    } else {                                                                                  \
      c.adjoint(grad_out, reinterpret_cast<T* const*>(grads),                                 \
                reinterpret_cast<const T* const*>(grids), grad_taps);                         \
    }                                                                                         \
  }
UPSAMPLE_STACK(coolchic_upsample_stack_f32, float)
UPSAMPLE_STACK(coolchic_upsample_stack_f64, double)

// element by element: split in `threads` slices (of at least 2^15 values), same bits
#define SOFT_ROUND_NOISE(NAME, T)                                                             \
  void NAME(const T* y, const T* u, int64_t size, double temperature, double shape_a,        \
            double shape_b, T* q, T* dq, int threads) {                                       \
    const int n = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, size >> 15))); \
    run_parts(n, n, [&](int k) {                                                              \
      const int64_t lo = size * k / n, hi = size * (k + 1) / n;                               \
      soft_round_noise<T>(y + lo, u + lo, hi - lo, T(temperature), T(shape_a), T(shape_b),    \
                          q + lo, dq + lo);                                                   \
    });                                                                                       \
  }
SOFT_ROUND_NOISE(coolchic_soft_round_noise_f32, float)
SOFT_ROUND_NOISE(coolchic_soft_round_noise_f64, double)

}  // extern "C"
