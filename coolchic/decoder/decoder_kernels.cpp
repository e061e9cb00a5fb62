// The decoder's two loops as native calls (loaded by coolchic/decoder/native.py):
// * coolchic_decode_latents: wave by wave, the integer ARM over the wave's latents
//   (vectorized across latents, reading each context neighbour as a contiguous run of a
//   small ring of recent waves: no gather), its outputs turned into table rows and
//   centres, and one range-decoded symbol per latent (with its Exp-Golomb escape extra
//   where there is one). The symbols of wave t are decoded as the blocks of the ARM of
//   wave t + 1 need them, so that both stay in cache;
// * coolchic_synthesize: the fixed-point upsampling cascade, the per-pixel layers, the
//   residual 3x3 convolutions and the rounding to the output's integer levels, in bands of
//   rows through rings of rows that stay in cache.
//
// They compute exactly what the numpy paths (coolchic/decoder/latents.py and
// coolchic/decoder/reconstruct.py) compute (tests compare them bit for bit), so the bitstream
// format does not depend on them:
// * values are integers (or integer multiples of a power of two) held in doubles, with
//   the layer weights of the numpy paths (power-of-two rescaling folded in). Every product
//   and partial sum stays exactly representable (below 2^53), so the order of the
//   additions cannot change a result; the sums still run in the order of the first native
//   decoder (inputs in order, then the bias; the upsampling's four taps left to right) and
//   each product is rounded before its addition (no fused multiply-add: the build passes
//   -ffp-contract=off), so even a stream that broke those bounds would decode as before.
//   No -ffast-math: floor and the clips must keep their IEEE meaning.
// * the range decoder is the algorithm of constriction 0.5's queue::RangeDecoder with
//   32-bit words, a 64-bit state and 24-bit probabilities (Pasco-style range coding:
//   lower, range and a 64-bit window `point` into the words), reimplemented here on the
//   same exact integer tables that the encoder hands to constriction.
//
// Vector code uses GCC/Clang vector extensions (a register of kVec doubles): AVX on the
// x86-64-v3 build, SSE2 (or the target's own) on the portable one; the arithmetic is the
// same element by element, only the width differs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace {

// --- vectors of doubles -------------------------------------------------------------------

#if defined(__AVX__)
constexpr int64_t kVec = 4;
#else
constexpr int64_t kVec = 2;
#endif
typedef double Vec __attribute__((vector_size(8 * kVec)));
typedef int32_t Ints __attribute__((vector_size(4 * kVec)));  // a Vec converted to int32

inline Vec load(const double* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(double* p, Vec v) { std::memcpy(p, &v, sizeof v); }
inline Vec splat(double x) {
  Vec v;  // not Vec{} + x: that addition is not the identity for -0.0, so it is kept
  for (int64_t i = 0; i < kVec; ++i) v[i] = x;
  return v;
}
// *p in every element, as one load (the compiler would otherwise load a vector of weights
// and shuffle it, which takes an arithmetic port from the multiply-adds)
inline Vec splat_at(const double* p) {
#if defined(__AVX__)
  return (Vec)_mm256_broadcast_sd(p);
#else
  return splat(*p);
#endif
}
inline Vec vfloor(Vec v) {
#if defined(__AVX__)
  return (Vec)_mm256_floor_pd((__m256d)v);
#elif defined(__SSE4_1__)
  return (Vec)_mm_floor_pd((__m128d)v);
#else
  for (int64_t i = 0; i < kVec; ++i) v[i] = std::floor(v[i]);
  return v;
#endif
}
// std::min(std::max(v, lo), hi) element by element (no NaN ever reaches a clip)
inline Vec clip(Vec v, Vec lo, Vec hi) {
  v = v < lo ? lo : v;
  return hi < v ? hi : v;
}

// acc + t * a. Fused into one rounding where the CPU has FMA: only for sums that are exact
// whatever the order and rounding (the ARM's; see `dense_block`).
inline Vec fused_madd(Vec t, Vec a, Vec acc) {
#if defined(__FMA__) && defined(__AVX__)
  return (Vec)_mm256_fmadd_pd((__m256d)t, (__m256d)a, (__m256d)acc);
#else
  return acc + t * a;
#endif
}

// o[2i] = even[i], o[2i + 1] = odd[i] for i < kVec
inline void store_interleaved(double* o, Vec even, Vec odd) {
#if defined(__AVX__)
  const __m256d lo = _mm256_unpacklo_pd((__m256d)even, (__m256d)odd);  // e0 o0 e2 o2
  const __m256d hi = _mm256_unpackhi_pd((__m256d)even, (__m256d)odd);  // e1 o1 e3 o3
  _mm256_storeu_pd(o, _mm256_permute2f128_pd(lo, hi, 0x20));
  _mm256_storeu_pd(o + 4, _mm256_permute2f128_pd(lo, hi, 0x31));
#else
  for (int64_t i = 0; i < kVec; ++i) {
    o[2 * i] = even[i];
    o[2 * i + 1] = odd[i];
  }
#endif
}

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// --- dense layers across lanes ------------------------------------------------------------

constexpr int64_t kLanes = 8;              // lanes per register block
constexpr int64_t kPerBlock = kLanes / kVec;  // vectors per block
constexpr int kMaxJ = int(12 / kPerBlock);  // outputs per block: 12 vector accumulators

// out[(j0 + j) * so + r] = clip(floor(sum_k w[k * n_out + j0 + j] * in[k][r] + b[j0 + j]),
// lo, hi) for j < J and the lanes r < n (a multiple of kLanes): J x kPerBlock accumulators
// stay in registers while the inputs stream by. Each product is added in the order of k,
// then the bias (the order of the augmented matrices' rows, whose last row is the bias).
// kFused: multiply-adds in one rounding where the CPU has them, for the ARM, whose sums are
// exact for any input (IntegerArm: |weights| <= 2^15, contexts within 2^21 even from corrupt
// data, activations within 2^30, fan-in <= 64: every partial sum below 2^52 units of its
// layer's step), so that fusing cannot change a bit; the synthesis' layers are not fused.
template <int J, bool kFused>
void dense_block(const double* __restrict w, const double* __restrict b, int64_t n_in, int64_t n_out, int64_t j0,
                 const double* const* in, int64_t n, double* __restrict out, int64_t so, double lo, double hi) {
  const Vec vlo = splat(lo), vhi = splat(hi);
  for (int64_t r = 0; r < n; r += kLanes) {
    Vec acc[J][kPerBlock];
    for (int j = 0; j < J; ++j)
      for (int64_t l = 0; l < kPerBlock; ++l) acc[j][l] = Vec{};
    for (int64_t k = 0; k < n_in; ++k) {
      Vec a[kPerBlock];
      for (int64_t l = 0; l < kPerBlock; ++l) a[l] = load(in[k] + r + l * kVec);
      const double* wk = w + k * n_out + j0;
      for (int j = 0; j < J; ++j) {
        const Vec t = splat_at(wk + j);
        for (int64_t l = 0; l < kPerBlock; ++l) {
          if constexpr (kFused) acc[j][l] = fused_madd(t, a[l], acc[j][l]);
          else acc[j][l] += t * a[l];
        }
      }
    }
    for (int j = 0; j < J; ++j) {
      const Vec bias = splat(b[j0 + j]);
      for (int64_t l = 0; l < kPerBlock; ++l)
        store(out + (j0 + j) * so + r + l * kVec, clip(vfloor(acc[j][l] + bias), vlo, vhi));
    }
  }
}

using BlockFn = void (*)(const double*, const double*, int64_t, int64_t, int64_t, const double* const*, int64_t,
                         double*, int64_t, double, double);
constexpr BlockFn kBlocks[2][7] = {
    {nullptr, dense_block<1, false>, dense_block<2, false>, dense_block<3, false>, dense_block<4, false>,
     dense_block<5, false>, dense_block<6, false>},
    {nullptr, dense_block<1, true>, dense_block<2, true>, dense_block<3, true>, dense_block<4, true>,
     dense_block<5, true>, dense_block<6, true>}};
static_assert(kMaxJ < 7, "a block width without its kernel");

// One layer over the lanes r < n (a multiple of kLanes): input k at in[k][r], output j at
// out[j * so + r]; w (n_in, n_out) input-major, then b (n_out,). The outputs go in balanced
// blocks of at most kMaxJ.
template <bool kFused>
void dense(const double* w, const double* b, int64_t n_in, int64_t n_out, const double* const* in, int64_t n,
           double* out, int64_t so, double lo, double hi) {
  const int64_t blocks = (n_out + kMaxJ - 1) / kMaxJ;
  for (int64_t i = 0, j0 = 0; i < blocks; ++i) {
    const int64_t width = (n_out - j0 + (blocks - i) - 1) / (blocks - i);
    kBlocks[kFused][width](w, b, n_in, n_out, j0, in, n, out, so, lo, hi);
    j0 += width;
  }
}

// A stack of layers: dims holds (inputs, outputs) per layer, params each layer's weights
// (inputs, outputs) input-major then its biases. Hidden activations live in two buffers of
// `lanes` lanes per row (rows[0], rows[1]: their row pointers).
struct Layers {
  int64_t count = 0;
  std::vector<int64_t> n_in, n_out;
  std::vector<const double*> w, b;
  int64_t widest = 1;

  Layers(int64_t n_layers, const int64_t* dims, const double* params) : count(n_layers) {
    for (int64_t l = 0; l < n_layers; ++l) {
      n_in.push_back(dims[2 * l]);
      n_out.push_back(dims[2 * l + 1]);
      w.push_back(params);
      params += dims[2 * l] * dims[2 * l + 1];
      b.push_back(params);
      params += dims[2 * l + 1];
      widest = std::max({widest, dims[2 * l], dims[2 * l + 1]});
    }
  }
  bool valid() const {
    if (count < 1) return false;
    for (int64_t l = 0; l < count; ++l)
      if (n_in[l] < 1 || n_out[l] < 1 || n_in[l] > 4096 || n_out[l] > 4096) return false;
    for (int64_t l = 0; l + 1 < count; ++l)
      if (n_out[l] != n_in[l + 1]) return false;
    return true;
  }
};

// Scratch for running a Layers over blocks of `lanes` lanes.
struct Activations {
  int64_t lanes;
  std::vector<double> data[2];
  std::vector<const double*> rows[2];

  Activations(const Layers& net, int64_t lanes_) : lanes(lanes_) {
    for (int i = 0; i < 2; ++i) {
      data[i].assign(net.widest * lanes, 0.0);
      for (int64_t k = 0; k < net.widest; ++k) rows[i].push_back(data[i].data() + k * lanes);
    }
  }
};

// Every layer of `net` over lanes r < n (n <= act.lanes, a multiple of kLanes): the hidden
// ones ReLU and bounded by act_max, the last one clipped to [last_lo, last_hi] into out
// (row stride so).
template <bool kFused>
void run_layers(const Layers& net, const double* const* in, int64_t n, Activations& act, double act_max,
                double* out, int64_t so, double last_lo, double last_hi) {
  for (int64_t l = 0; l < net.count; ++l) {
    if (l + 1 < net.count) {
      double* h = act.data[l & 1].data();
      dense<kFused>(net.w[l], net.b[l], net.n_in[l], net.n_out[l], in, n, h, act.lanes, 0.0, act_max);
      in = act.rows[l & 1].data();
    } else {
      dense<kFused>(net.w[l], net.b[l], net.n_in[l], net.n_out[l], in, n, out, so, last_lo, last_hi);
    }
  }
}

// --- the ARM's usual shapes, with their sizes known to the compiler ---------------------

// dense_block (fused) for one block of kLanes lanes, with the input and output counts
// known at compile time: unrolled, inlined, its accumulators kept in registers; the same
// sums.
template <int NIN, int NOUT, int J>
[[gnu::always_inline]] inline void fixed_block(const double* __restrict w, const double* __restrict b, int j0,
                                               const double* const* in, double* __restrict out, Vec lo, Vec hi) {
  Vec acc[J][kPerBlock];
  for (int j = 0; j < J; ++j)
    for (int64_t l = 0; l < kPerBlock; ++l) acc[j][l] = Vec{};
  for (int k = 0; k < NIN; ++k) {
    Vec a[kPerBlock];
    for (int64_t l = 0; l < kPerBlock; ++l) a[l] = load(in[k] + l * kVec);
    for (int j = 0; j < J; ++j) {
      const Vec t = splat_at(w + k * NOUT + j0 + j);
      for (int64_t l = 0; l < kPerBlock; ++l) acc[j][l] = fused_madd(t, a[l], acc[j][l]);
    }
  }
  for (int j = 0; j < J; ++j) {
    const Vec bias = splat_at(b + j0 + j);
    for (int64_t l = 0; l < kPerBlock; ++l) store(out + (j0 + j) * kLanes + l * kVec, clip(vfloor(acc[j][l] + bias), lo, hi));
  }
}

// The output blocks J0 .. NOUT - 1 of a layer, JW wide (the balanced widths of `dense`),
template <int NIN, int NOUT, int J0, int JW>
[[gnu::always_inline]] inline void fixed_blocks(const double* w, const double* b, const double* const* in, double* out,
                                                Vec lo, Vec hi) {
  if constexpr (J0 < NOUT) {
    constexpr int J = JW < NOUT - J0 ? JW : NOUT - J0;
    fixed_block<NIN, NOUT, J>(w, b, J0, in, out, lo, hi);
    fixed_blocks<NIN, NOUT, J0 + J, JW>(w, b, in, out, lo, hi);
  }
}

template <int NIN, int NOUT>
[[gnu::always_inline]] inline void fixed_layer(const double* w, const double* b, const double* const* in, double* out,
                                               double lo, double hi) {
  constexpr int blocks = (NOUT + kMaxJ - 1) / kMaxJ;
  fixed_blocks<NIN, NOUT, 0, (NOUT + blocks - 1) / blocks>(w, b, in, out, splat(lo), splat(hi));
}

// The ARM of C contexts, hidden layers of H1 and (unless 0) H2, over kLanes lanes: in[k]
// the lanes of context k, out (2, kLanes). What run_layers computes, with these sizes.
template <int C, int H1, int H2>
struct FixedArm {
  const Layers& net;
  double act_max;
  alignas(32) double h0[H1 * kLanes];
  alignas(32) double h1[(H2 ? H2 : 1) * kLanes];
  const double* rows0[H1];
  const double* rows1[H2 ? H2 : 1];

  static bool matches(const Layers& a) {
    return a.count == (H2 ? 3 : 2) && a.n_in[0] == C && a.n_out[0] == H1 && (!H2 || a.n_out[1] == H2);
  }
  FixedArm(const Layers& net_, double act_max_) : net(net_), act_max(act_max_) {
    for (int k = 0; k < H1; ++k) rows0[k] = h0 + k * kLanes;
    for (int k = 0; k < (H2 ? H2 : 1); ++k) rows1[k] = h1 + k * kLanes;
  }
  void run(const double* const* in, double* out) {
    fixed_layer<C, H1>(net.w[0], net.b[0], in, h0, 0.0, act_max);
    if constexpr (H2 > 0) {
      fixed_layer<H1, H2>(net.w[1], net.b[1], rows0, h1, 0.0, act_max);
      fixed_layer<H2, 2>(net.w[2], net.b[2], rows1, out, -HUGE_VAL, HUGE_VAL);
    } else {
      fixed_layer<H1, 2>(net.w[1], net.b[1], rows0, out, -HUGE_VAL, HUGE_VAL);
    }
  }
};

// Any other ARM: the sizes at run time.
struct GenericArm {
  const Layers& net;
  double act_max;
  Activations act;
  GenericArm(const Layers& net_, double act_max_) : net(net_), act_max(act_max_), act(net_, kLanes) {}
  void run(const double* const* in, double* out) {
    run_layers<true>(net, in, kLanes, act, act_max, out, kLanes, -HUGE_VAL, HUGE_VAL);
  }
};

// --- range decoding -----------------------------------------------------------------------

constexpr int kPrecision = 24;                     // probability bits
constexpr uint64_t kWordRange = uint64_t(1) << 32;  // renormalize when range falls below
constexpr int64_t kRow64 = 64;                     // cdf entries per row of the fast search

// #{k in 0 .. 63 : cdf[k] <= q} - 1 for a row of 64 cumulative frequencies (cdf[0] = 0,
// cdf[63] = 2^24 > q, strictly increasing): the symbol whose interval holds q, the same as
// a binary search, without its chain of dependent loads. Values are below 2^31, so signed
// compares are exact.
inline int search64(const uint32_t* cdf, uint32_t q) {
#if defined(__AVX2__)
  const __m256i qv = _mm256_set1_epi32(int(q));
  auto above = [&](int i) {  // -1 where cdf > q, as 8 x int32
    return _mm256_cmpgt_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(cdf) + i), qv);
  };
  // pack the eight masks to bytes (lane order is irrelevant to a count)
  const __m256i lo = _mm256_packs_epi16(_mm256_packs_epi32(above(0), above(1)), _mm256_packs_epi32(above(2), above(3)));
  const __m256i hi = _mm256_packs_epi16(_mm256_packs_epi32(above(4), above(5)), _mm256_packs_epi32(above(6), above(7)));
  const uint64_t bits = uint64_t(uint32_t(_mm256_movemask_epi8(lo))) | (uint64_t(uint32_t(_mm256_movemask_epi8(hi))) << 32);
  return 63 - __builtin_popcountll(bits);
#else
  int n = 0;
  for (int k = 0; k < kRow64; ++k) n += int32_t(cdf[k]) <= int32_t(q);
  return n - 1;
#endif
}

struct RangeDecoder {
  const uint32_t* words;
  int64_t n_words;
  int64_t pos = 0;
  uint64_t lower = 0;
  uint64_t range = ~uint64_t(0);
  uint64_t point = 0;

  RangeDecoder(const uint32_t* w, int64_t n) : words(w), n_words(n) {
    int read = 0;  // the first two words are the point; fewer are padded with zero bits
    while (read < 2 && pos < n_words) {
      point = (point << 32) | words[pos++];
      ++read;
    }
    if (read == 1) point <<= 32;
  }

  // The symbol whose interval [cdf[s], cdf[s + 1]) holds the current quantile; -1 when the
  // data cannot have come from the encoder. cdf has alphabet + 1 entries, 0 .. 2^24; with
  // kFast, exactly 64 of them (alphabet 63).
  template <bool kFast>
  inline int decode(const uint32_t* cdf, int alphabet) {
    const uint64_t scale = range >> kPrecision;
    const uint64_t quantile = (point - lower) / scale;
    if (quantile >= (uint64_t(1) << kPrecision)) return -1;
    int lo;
    if constexpr (kFast) {
      lo = search64(cdf, uint32_t(quantile));
    } else {
      lo = 0;
      int hi = alphabet;  // cdf[lo] <= quantile < cdf[hi]
      while (hi - lo > 1) {
        const int mid = (lo + hi) >> 1;
        if (cdf[mid] <= quantile) lo = mid; else hi = mid;
      }
    }
    lower += scale * cdf[lo];
    range = scale * uint64_t(cdf[lo + 1] - cdf[lo]);
    if (range < kWordRange) {
      lower <<= 32;
      range <<= 32;
      point <<= 32;
      if (pos < n_words) point |= words[pos++];
    }
    return lo;
  }

  // constriction's maybe_exhausted: every word read, and the point within what the final
  // flush words of an encoder can leave.
  bool exhausted() const {
    return pos == n_words && (range == ~uint64_t(0) || point - lower < (uint64_t(2) << 32) - 1);
  }
};

// Exp-Golomb order 0 over uniform bits: z zeros, then the z + 1 bits of e + 1.
// Returns e >= 0, or a negative error code of coolchic_decode_latents.
int64_t decode_extra(RangeDecoder& escape, int64_t max_prefix, int64_t max_extra) {
  static const uint32_t kBit[3] = {0, 1u << (kPrecision - 1), 1u << kPrecision};
  int64_t zeros = 0;
  for (;;) {
    const int bit = escape.decode<false>(kBit, 2);
    if (bit < 0) return -2;
    if (bit == 1) break;
    if (++zeros > max_prefix) return -3;
  }
  uint64_t v = 1;
  for (int64_t i = 0; i < zeros; ++i) {
    const int bit = escape.decode<false>(kBit, 2);
    if (bit < 0) return -2;
    v = (v << 1) | uint64_t(bit);
  }
  const int64_t extra = int64_t(v) - 1;
  return extra > max_extra ? -4 : extra;
}

inline void prefetch_row(const uint32_t* row, int64_t entries) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t b = 0; b < entries * 4; b += 64) __builtin_prefetch(p + b);
  __builtin_prefetch(p + entries * 4 - 1);
}

// --- latent decoding ----------------------------------------------------------------------

constexpr int64_t kPrefetch = 12;  // symbols ahead whose table rows are fetched while decoding

struct LatentParams {
  const uint32_t* cdf;
  int64_t alphabet, radius, mu_frac_bits, n_scale, latent_max, max_prefix, max_extra;
};

// The symbols of one wave, decoded in order: per symbol its table row, centre, flat buffer
// index and ring cell. until(n) decodes them up to symbol n (the ARM of the next wave asks
// for those that its next block of latents reads).
struct WaveDecoder {
  RangeDecoder main, escape;
  LatentParams p;
  int64_t stride, high_escape;
  double* buffer;
  const int32_t* rows = nullptr;
  const int32_t* centers = nullptr;
  const int64_t* where = nullptr;
  double* const* cells = nullptr;
  int64_t size = 0, cursor = 0;
  int status = 0;  // an error code of coolchic_decode_latents, once one has occurred

  WaveDecoder(const uint32_t* main_words, int64_t n_main, const uint32_t* escape_words, int64_t n_escape,
              const LatentParams& params, double* buffer_)
      : main(main_words, n_main), escape(escape_words, n_escape), p(params), stride(params.alphabet + 1),
        high_escape(2 * params.radius), buffer(buffer_) {}

  void start(const int32_t* rows_, const int32_t* centers_, const int64_t* where_, double* const* cells_, int64_t n) {
    rows = rows_;
    centers = centers_;
    where = where_;
    cells = cells_;
    size = status ? 0 : n;
    cursor = 0;
    for (int64_t i = 0; i < std::min(size, kPrefetch); ++i) prefetch_row(p.cdf + rows[i] * stride, stride);
  }
  void fail(int code) {
    status = code;
    cursor = size;
  }
  inline void one() {
    const int64_t i = cursor++;
    if (i + kPrefetch < size) prefetch_row(p.cdf + rows[i + kPrefetch] * stride, stride);
    const int s = main.decode<true>(p.cdf + rows[i] * stride, int(p.alphabet));
    if (s < 0) return fail(1);
    int64_t d = s - p.radius;
    if (s == 0 || s == high_escape) {
      const int64_t extra = decode_extra(escape, p.max_prefix, p.max_extra);
      if (extra < 0) return fail(int(-extra));
      d = (s == 0 ? -1 : 1) * (p.radius + extra);
    }
    const double v = double(centers[i] + d);
    buffer[where[i]] = v;
    *cells[i] = v;
  }
  void until(int64_t n) {
    n = std::min(n, size);
    while (cursor < n) one();
  }
};

// A run of one grid's latents in a wave: rows r0 .. r0 + n - 1, from order index `first`.
struct Segment {
  int64_t grid, r0, n, first;
};

// Where each latent lives (latents.Layout): grid g's rows of row_width cells start at
// starts[g] with CONTEXT_ROWS (2) zero rows, each row with 2 zero cells on either side;
// wave t holds, grid by grid, the latents (r, t - slope * r) in increasing r (the order of
// latents.Schedule, computed here from the grids' shapes). The decoder
// keeps each grid's last `ring` waves in a small ring (slot t mod ring holds wave t as a
// column over the rows, 2 zero rows first), where a context neighbour (dr, dc) of the
// latents of a wave is a contiguous run of cells: the ARM reads it without a gather.
struct Layout {
  int64_t n_grids, row_width, slope, reach, ring, n_waves;
  std::vector<int64_t> starts, heights, widths, dr, dc;
  std::vector<int64_t> column, base;  // per grid: cells per ring slot, first cell in `cells`
  std::vector<double> cells;

  // false when the arguments do not describe such a schedule
  bool init(int64_t n_grids_, const int64_t* starts_, const int64_t* widths_, int64_t row_width_,
            const int64_t* offsets, int64_t n_ctx) {
    n_grids = n_grids_;
    row_width = row_width_;
    if (n_grids < 1 || row_width < 5 || n_ctx < 1 || starts_[0] != 0) return false;
    starts.assign(starts_, starts_ + n_grids + 1);
    widths.assign(widths_, widths_ + n_grids);
    for (int64_t g = 0; g < n_grids; ++g) {
      const int64_t span = starts[g + 1] - starts[g];
      if (span <= 2 * row_width || span % row_width) return false;
      if (widths[g] < 1 || widths[g] > row_width - 4) return false;
      heights.push_back(span / row_width - 2);
    }
    slope = 1;
    for (int64_t k = 0; k < n_ctx; ++k) {  // offset dr * row_width + dc with |dc| <= 2
      const int64_t off = int64_t(offsets[k]);
      const int64_t r = (off + 2 >= 0 ? off + 2 : off + 2 - row_width + 1) / row_width;  // floor
      const int64_t c = off - r * row_width;
      if (r < -2 || r > 0 || (r == 0 && c >= 0)) return false;  // not a causal neighbour
      dr.push_back(r);
      dc.push_back(c);
      if (r < 0)
        while (slope * r + c >= 0) ++slope;
    }
    if (row_width - slope < 1) return false;
    n_waves = 0;
    for (int64_t g = 0; g < n_grids; ++g) n_waves = std::max(n_waves, slope * (heights[g] - 1) + widths[g]);
    reach = 0;
    for (int64_t k = 0; k < n_ctx; ++k) reach = std::max(reach, -(slope * dr[k] + dc[k]));
    for (ring = 2; ring < reach + 2; ring *= 2) {
    }
    int64_t total = 0;
    for (int64_t g = 0; g < n_grids; ++g) {
      column.push_back(heights[g] + 2 + kLanes);  // padding lanes of a block read past the end
      base.push_back(total);
      total += ring * column[g];
    }
    cells.assign(total, 0.0);
    return true;
  }
  double* cell(int64_t g, int64_t t, int64_t r) { return cells.data() + base[g] + (t & (ring - 1)) * column[g] + r + 2; }

  // The segments of wave t, grid by grid; returns the wave's latent count.
  int64_t segments(int64_t t, std::vector<Segment>& out) const {
    out.clear();
    int64_t count = 0;
    for (int64_t g = 0; g < n_grids; ++g) {
      const int64_t past = t - widths[g] + 1;  // rows below ceil(past / slope) are behind the wave
      const int64_t lo = past <= 0 ? 0 : (past + slope - 1) / slope, hi = std::min(heights[g] - 1, t / slope);
      if (hi < lo) continue;
      out.push_back({g, lo, hi - lo + 1, count});
      count += hi - lo + 1;
    }
    return count;
  }
  // flat buffer index of latent (r, c) of grid g
  int64_t flat(int64_t g, int64_t r, int64_t c) const { return starts[g] + (r + 2) * row_width + c + 2; }
};

// Per grid, where its part of a wave starts in the wave's order and which rows it holds.
struct WaveIndex {
  std::vector<int64_t> first, r0, n;
  void build(const std::vector<Segment>& segs, int64_t n_grids, int64_t count) {
    first.assign(n_grids, count);
    r0.assign(n_grids, 0);
    n.assign(n_grids, 0);
    for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
      first[it->grid] = it->first;
      r0[it->grid] = it->r0;
      n[it->grid] = it->n;
    }
    for (int64_t g = n_grids - 2; g >= 0; --g)
      if (!n[g]) first[g] = first[g + 1];
  }
  // symbols to decode before grid g's rows below r_end are all known
  int64_t needed(int64_t g, int64_t r_end) const { return first[g] + std::min(std::max(r_end - r0[g], int64_t(0)), n[g]); }
};

// The symbols of one wave waiting to be decoded.
struct WaveQueue {
  std::vector<int32_t> rows, centers;  // kLanes spare entries: a block's lanes are stored whole
  std::vector<double*> cells;
  std::vector<int64_t> where;  // flat buffer index
  explicit WaveQueue(int64_t most) : rows(most + kLanes), centers(most + kLanes), cells(most), where(most) {}
};

// See coolchic_decode_latents.
template <class Arm>
int decode_latents(const uint32_t* main_words, int64_t n_main, const uint32_t* escape_words, int64_t n_escape,
                   const int64_t* offsets, int64_t n_ctx, int64_t row_width, int64_t n_grids, const int64_t* starts,
                   const int64_t* widths, Arm& arm, const LatentParams& p, double* buffer) {
  Layout lay;
  if (!lay.init(n_grids, starts, widths, row_width, offsets, n_ctx)) return 7;
  const int64_t n_waves = lay.n_waves;
  int64_t most = 1;
  {
    std::vector<Segment> segs;
    for (int64_t t = 0; t < n_waves; ++t) most = std::max(most, lay.segments(t, segs));
  }
  WaveQueue cur(most), next(most);
  std::vector<Segment> seg_cur, seg_next;
  WaveIndex deps;
  alignas(32) double last[2 * kLanes];
  std::vector<const double*> base(n_ctx), ctx(n_ctx);
  // per ring slot and grid, the rows that the wave in it wrote (cleared before reuse)
  std::vector<int64_t> written(2 * lay.ring * n_grids, 0);
  WaveDecoder dec(main_words, n_main, escape_words, n_escape, p, buffer);
  const Vec mu_step = splat(double(int64_t(1) << p.mu_frac_bits)), mu_scale = splat(1.0 / double(int64_t(1) << p.mu_frac_bits));
  const Vec n_scale = splat(double(p.n_scale)), zero = splat(0.0), top_scale = splat(double(p.n_scale - 1));
  const Vec lmax = splat(double(p.latent_max));

  // the ARM over wave t (whose segments are segs) into q, decoding the previous wave's
  // symbols as its blocks need them
  auto arm_wave = [&](int64_t t, const std::vector<Segment>& segs, WaveQueue& q) {
    int64_t qi = 0;
    for (const Segment& s : segs) {
      for (int64_t k = 0; k < n_ctx; ++k) base[k] = lay.cell(s.grid, t + lay.slope * lay.dr[k] + lay.dc[k], s.r0 + lay.dr[k]);
      for (int64_t b0 = 0; b0 < s.n; b0 += kLanes) {
        const int64_t r = s.r0 + b0;  // the block's first row; its contexts lie in rows <= r + kLanes - 1
        dec.until(deps.needed(s.grid, r + kLanes));
        for (int64_t k = 0; k < n_ctx; ++k) ctx[k] = base[k] + b0;
        arm.run(ctx.data(), last);
        // (mean + half a step, ln-scale index) -> table row and centre for the block's
        // lanes, in doubles (integers below 2^53: exact): the centre is floor(mean / 2^b)
        // (floor(mu + 1/2)), the row's mean offset index the remainder
        for (int64_t l = 0; l < kPerBlock; ++l) {
          const Vec v0 = load(last + l * kVec);
          const Vec center = vfloor(v0 * mu_scale);
          const Vec row = (v0 - center * mu_step) * n_scale + clip(load(last + kLanes + l * kVec), zero, top_scale);
          const Ints r32 = __builtin_convertvector(row, Ints), c32 = __builtin_convertvector(clip(center, -lmax, lmax), Ints);
          std::memcpy(q.rows.data() + qi + l * kVec, &r32, sizeof r32);
          std::memcpy(q.centers.data() + qi + l * kVec, &c32, sizeof c32);
        }
        const int64_t m = std::min(kLanes, s.n - b0);
        double* cell = lay.cell(s.grid, t, r);
        for (int64_t i = 0; i < m; ++i, ++qi) {
          q.cells[qi] = cell + i;
          q.where[qi] = lay.flat(s.grid, r + i, t - lay.slope * (r + i));
        }
      }
    }
  };

  deps.build(seg_cur, n_grids, 0);
  int64_t count_next = 0;
  if (n_waves > 0) {
    count_next = lay.segments(0, seg_next);
    arm_wave(0, seg_next, next);  // nothing to decode yet: dec has no symbols
  }
  for (int64_t t = 0; t < n_waves; ++t) {
    std::swap(cur, next);
    std::swap(seg_cur, seg_next);
    const int64_t count = count_next;
    // wave t's ring slot: clear the rows its previous wave wrote, note the ones t writes
    const int64_t slot = t & (lay.ring - 1);
    for (int64_t g = 0; g < n_grids; ++g) {
      int64_t* w = written.data() + 2 * (slot * n_grids + g);
      std::fill(lay.cell(g, t, w[0]), lay.cell(g, t, w[0] + w[1]), 0.0);
      w[0] = w[1] = 0;
    }
    for (const Segment& s : seg_cur) {
      int64_t* w = written.data() + 2 * (slot * n_grids + s.grid);
      w[0] = s.r0;
      w[1] = s.n;
    }
    deps.build(seg_cur, n_grids, count);
    dec.start(cur.rows.data(), cur.centers.data(), cur.where.data(), cur.cells.data(), count);
    if (t + 1 < n_waves) {
      count_next = lay.segments(t + 1, seg_next);
      arm_wave(t + 1, seg_next, next);
    }
    dec.until(count);
    if (dec.status) return dec.status;
  }
  if (!dec.main.exhausted()) return 5;
  if (!dec.escape.exhausted()) return 6;
  return 0;
}

// --- synthesis ----------------------------------------------------------------------------

// One level's 2x upsampling: taps over 2^10 (coolchic.decoder.constants.UPS_FRAC); output 2j
// reads inputs j-2 .. j+1 with them, output 2j+1 inputs j-1 .. j+2 with them reversed;
// inputs outside the axis read its nearest edge; every output is floored, then clipped to
// +-2^36 (coolchic.decoder.constants.UPS_MAX).
constexpr double kUpsMax = 68719476736.0;  // 2^36
constexpr double kUpsScale = 1.0 / 1024.0;

struct Taps {
  double t[4];
  double out(double a, double b, double c, double d) const {
    const double v = std::floor((t[0] * a + t[1] * b + t[2] * c + t[3] * d) * kUpsScale);
    return std::min(std::max(v, -kUpsMax), kUpsMax);
  }
};

// One 2x pass along a row: n inputs -> n_out outputs (n_out <= 2n).
void upsample_row(const double* __restrict in, int64_t n, double* __restrict out, int64_t n_out, const Taps& k) {
  auto at = [&](int64_t i) { return in[std::min(std::max(i, int64_t(0)), n - 1)]; };
  const Taps r{{k.t[3], k.t[2], k.t[1], k.t[0]}};
  auto pair = [&](int64_t j) {
    if (2 * j < n_out) out[2 * j] = k.out(at(j - 2), at(j - 1), at(j), at(j + 1));
    if (2 * j + 1 < n_out) out[2 * j + 1] = r.out(at(j - 1), at(j), at(j + 1), at(j + 2));
  };
  const int64_t half = (n_out + 1) / 2;  // output pairs
  // interior: whole pairs (2j + 1 < n_out) whose inputs j - 2 .. j + 2 lie inside the row
  const int64_t lo = std::min<int64_t>(2, half), hi = std::max(lo, std::min(n_out / 2, n - 2));
  for (int64_t j = 0; j < lo; ++j) pair(j);  // the edges read clamped inputs
  int64_t j = lo;
  const Vec t0 = splat(k.t[0]), t1 = splat(k.t[1]), t2 = splat(k.t[2]), t3 = splat(k.t[3]);
  const Vec scale = splat(kUpsScale), vmax = splat(kUpsMax), vmin = splat(-kUpsMax);
  for (; j + kVec <= hi; j += kVec) {  // kVec pairs at a time, interleaved on the way out
    const double* x = in + j;
    const Vec a = load(x - 2), b = load(x - 1), c = load(x), d = load(x + 1), e = load(x + 2);
    const Vec even = clip(vfloor((t0 * a + t1 * b + t2 * c + t3 * d) * scale), vmin, vmax);
    const Vec odd = clip(vfloor((t3 * b + t2 * c + t1 * d + t0 * e) * scale), vmin, vmax);
    store_interleaved(out + 2 * j, even, odd);
  }
  for (; j < hi; ++j) {
    const double* x = in + j;
    out[2 * j] = k.out(x[-2], x[-1], x[0], x[1]);
    out[2 * j + 1] = r.out(x[-1], x[0], x[1], x[2]);
  }
  for (j = hi; j < half; ++j) pair(j);
}

// out[c] (c < n) from four input rows: the pass along the columns of one output row
// (taps already in the order of the rows they multiply).
void combine_rows(const double* const* row, const double* t, double* __restrict out, int64_t n) {
  const Vec t0 = splat(t[0]), t1 = splat(t[1]), t2 = splat(t[2]), t3 = splat(t[3]);
  const Vec scale = splat(kUpsScale), vmax = splat(kUpsMax), vmin = splat(-kUpsMax);
  int64_t c = 0;
  for (; c + kVec <= n; c += kVec) {
    const Vec v = t0 * load(row[0] + c) + t1 * load(row[1] + c) + t2 * load(row[2] + c) + t3 * load(row[3] + c);
    store(out + c, clip(vfloor(v * scale), vmin, vmax));
  }
  for (; c < n; ++c) {
    const double v = std::floor((t[0] * row[0][c] + t[1] * row[1][c] + t[2] * row[2][c] + t[3] * row[3][c]) * kUpsScale);
    out[c] = std::min(std::max(v, -kUpsMax), kUpsMax);
  }
}

// The taps of output row o (phase o & 1) and the index of its first input row, o / 2 - 2
// (even) or o / 2 - 1 (odd).
inline int64_t row_taps(int64_t o, const Taps& k, double t[4]) {
  const bool odd = o & 1;
  for (int i = 0; i < 4; ++i) t[i] = k.t[odd ? 3 - i : i];
  return (o >> 1) - 2 + (odd ? 1 : 0);
}

// (h, w) -> (h, w_out) along the columns, then -> (h_out, w_out) along the rows.
std::vector<double> upsample(const std::vector<double>& x, int64_t h, int64_t w, int64_t h_out, int64_t w_out,
                             const Taps& k) {
  std::vector<double> cols(h * w_out), out(h_out * w_out);
  for (int64_t r = 0; r < h; ++r) upsample_row(x.data() + r * w, w, cols.data() + r * w_out, w_out, k);
  for (int64_t o = 0; o < h_out; ++o) {
    double t[4];
    const int64_t first = row_taps(o, k, t);
    const double* row[4];
    for (int64_t i = 0; i < 4; ++i) row[i] = cols.data() + std::min(std::max(first + i, int64_t(0)), h - 1) * w_out;
    combine_rows(row, t, out.data() + o * w_out, w_out);
  }
  return out;
}

// One output row of a residual 3x3 convolution: out[o][1 + c] = clip(in[o][1][1 + c] +
// clip(floor(conv))) for c < w, where in[ci][ky] is input channel ci's row r - 1 + ky in
// padded layout (cell 0 and w + 1 replicate the edges). The sums run from the bias over
// the input channels, ky and kx in order. The last vector of the row runs past cell w
// (into the row's spare cells; the caller then rewrites the border).
template <int C>
void conv_row(const double* const* in, double* const* out, int64_t channels_, int64_t w, const double* taps,
              const double* bias, double act_max) {
  const int64_t channels = C > 0 ? C : channels_;
  constexpr int kMax = C > 0 ? C : 1;
  constexpr int64_t kL = C > 0 && C <= 3 ? 2 : 1;  // vectors per block: each tap loaded once for them
  const Vec vmax = splat(act_max), vmin = splat(-act_max);
  for (int64_t o0 = 0; o0 < channels; o0 += kMax) {  // all outputs at once when C > 0
    const int64_t nco = std::min<int64_t>(kMax, channels - o0);
    for (int64_t c = 0; c < w; c += kL * kVec) {
      Vec acc[kMax][kL];
      for (int64_t o = 0; o < nco; ++o)
        for (int64_t l = 0; l < kL; ++l) acc[o][l] = splat(bias[o0 + o]);
      for (int64_t ci = 0; ci < channels; ++ci)
        for (int64_t ky = 0; ky < 3; ++ky)
          for (int64_t kx = 0; kx < 3; ++kx) {
            Vec v[kL];
            for (int64_t l = 0; l < kL; ++l) v[l] = load(in[ci * 3 + ky] + c + l * kVec + kx);
            for (int64_t o = 0; o < nco; ++o) {
              const Vec t = splat_at(taps + (((o0 + o) * channels + ci) * 3 + ky) * 3 + kx);
              for (int64_t l = 0; l < kL; ++l) acc[o][l] += t * v[l];
            }
          }
      for (int64_t o = 0; o < nco; ++o)
        for (int64_t l = 0; l < kL; ++l) {
          const int64_t at = 1 + c + l * kVec;
          store(out[o0 + o] + at, clip(clip(vfloor(acc[o][l]), vmin, vmax) + load(in[(o0 + o) * 3 + 1] + at), vmin, vmax));
        }
    }
  }
}

// Rows of padded layout: pixel c of a row at cell 1 + c, the edges replicated in cells 0 and
// w + 1, and spare cells after them up to the row stride (kVec or more) that vector loops
// may touch.
inline void fill_edges(double* row, int64_t w) {
  row[0] = row[1];
  row[w + 1] = row[w];
}

// A stage of the synthesis (the per-pixel layers' output, then each convolution's) as a
// ring of `rows` rows per channel: row r of the image in slot r mod rows.
struct Stage {
  int64_t channels, rows, stride;
  std::vector<double> data;
  Stage(int64_t channels_, int64_t rows_, int64_t stride_)
      : channels(channels_), rows(rows_), stride(stride_), data(channels_ * rows_ * stride_, 0.0) {}
  double* row(int64_t c, int64_t r) { return data.data() + (c * rows + r % rows) * stride; }
};

// See coolchic_synthesize.
int synthesize(int64_t n_grids, const int64_t* const* grids, const int64_t* shapes, const Layers& mlp,
               int64_t n_conv, const double* conv, const double* taps, double act_max, int64_t bit_depth,
               void* image) {
  const int64_t h = shapes[0], w = shapes[1];
  const int64_t channels = mlp.n_out[mlp.count - 1];
  if (n_grids < 1 || h < 1 || w < 1 || !mlp.valid() || mlp.n_in[0] != n_grids) return 1;
  const double unit = 65536.0;  // 2^SYN_FRAC
  // grids 1.. upsampled in a cascade to grid 1's size (columns then rows at each level,
  // floored after each pass); the last level, into grid 0, runs band by band below
  std::vector<std::vector<double>> coarse(n_grids);
  for (int64_t k = 1; k < n_grids; ++k) {
    int64_t gh = shapes[2 * k], gw = shapes[2 * k + 1];
    std::vector<double> x(gh * gw);
    for (int64_t i = 0; i < gh * gw; ++i) x[i] = double(grids[k][i]) * unit;
    for (int64_t l = k - 1; l >= 1; --l) {
      const Taps t{{taps[4 * l], taps[4 * l + 1], taps[4 * l + 2], taps[4 * l + 3]}};
      x = upsample(x, gh, gw, shapes[2 * l], shapes[2 * l + 1], t);
      gh = shapes[2 * l];
      gw = shapes[2 * l + 1];
    }
    coarse[k] = std::move(x);
  }
  const Taps last{{taps[0], taps[1], taps[2], taps[3]}};
  const int64_t h1 = n_grids > 1 ? shapes[2] : 0, w1 = n_grids > 1 ? shapes[3] : 0;

  // Bands of `band` rows: the last upsampling level and the per-pixel layers over the
  // lanes of the band's rows in padded layout (border and spare lanes computed, unused),
  // then each convolution as far as the rows of its input allow, then the output's rows.
  // Every stage is a ring of rows, so the working set stays in cache.
  const int64_t stride = round_up(w + 2 + 2 * kVec, kLanes);  // cells per row
  const int64_t band = std::min(h, std::max<int64_t>(4, 6144 / stride));
  const int64_t xs = band * stride;  // plane stride of the band's inputs
  std::vector<double> x(n_grids * xs, 0.0);
  std::vector<const double*> x_rows(n_grids);
  // ring of grid 1's rows upsampled along the columns (a band reads at most band / 2 + 6)
  const int64_t col_rows = std::min(band + 8, std::max<int64_t>(h1, 1));
  std::vector<double> cols(n_grids > 1 ? (n_grids - 1) * col_rows * w : 0);
  auto col_row = [&](int64_t k, int64_t j) { return cols.data() + ((k - 1) * col_rows + j % col_rows) * w; };
  int64_t cols_done = 0;
  // rings of whole bands, at least band + n_conv + 2 rows: a stage writes at most that far
  // ahead of the oldest row that the next one still reads; or the whole image (no slot
  // reused, and a band's rows still consecutive slots) where that is fewer rows
  const int64_t ring = std::min(h, band * (1 + (n_conv + 2 + band - 1) / band));
  std::vector<Stage> stages;
  for (int64_t s = 0; s <= n_conv; ++s) stages.emplace_back(channels, ring, stride);
  std::vector<int64_t> done(n_conv + 1, 0);
  constexpr int64_t kPixels = 128;  // lanes per pass of the layers (activations in L1)
  Activations act(mlp, kPixels);
  std::vector<const double*> conv_in(3 * channels);
  std::vector<double*> conv_out(channels);
  const double max_value = double((int64_t(1) << bit_depth) - 1);
  const double factor = max_value / unit;
  int64_t stored = 0;
  const Vec vfactor = splat(factor), vhalf = splat(0.5), vzero = splat(0.0), vtop = splat(max_value);
  std::vector<int32_t> line(channels * stride);
  auto store_row = [&](auto* out, int64_t r) {  // floor(y * max / 2^16 + 1/2), clipped
    Stage& y = stages[n_conv];
    for (int64_t c = 0; c < channels; ++c) {  // into line (C, w + spare), then interleaved
      const double* src = y.row(c, r) + 1;
      int32_t* dst = line.data() + c * stride;
      for (int64_t i = 0; i < w; i += kVec) {
        const Ints v = __builtin_convertvector(clip(vfloor(load(src + i) * vfactor + vhalf), vzero, vtop), Ints);
        std::memcpy(dst + i, &v, sizeof v);
      }
    }
    auto* dst = out + r * w * channels;
    using T = std::remove_reference_t<decltype(*out)>;
    for (int64_t i = 0; i < w; ++i)
      for (int64_t c = 0; c < channels; ++c) dst[i * channels + c] = static_cast<T>(line[c * stride + i]);
  };

  for (int64_t o0 = 0; o0 < h; o0 += band) {
    const int64_t o1 = std::min(h, o0 + band), nr = o1 - o0;
    for (int64_t r = 0; r < nr; ++r) {
      const int64_t* g = grids[0] + (o0 + r) * w;
      double* dst = x.data() + r * stride + 1;
      for (int64_t c = 0; c < w; ++c) dst[c] = double(g[c]) * unit;
    }
    if (n_grids > 1) {
      // grid 1's rows that output rows o0 .. o1 - 1 read: at most band / 2 + 6 of them
      const int64_t j_hi = std::min(h1 - 1, ((o1 - 1) >> 1) + 2);
      for (; cols_done <= j_hi; ++cols_done)
        for (int64_t k = 1; k < n_grids; ++k)
          upsample_row(coarse[k].data() + cols_done * w1, w1, col_row(k, cols_done), w, last);
      for (int64_t k = 1; k < n_grids; ++k)
        for (int64_t r = 0; r < nr; ++r) {
          double t[4];
          const int64_t first = row_taps(o0 + r, last, t);
          const double* row[4];
          for (int64_t i = 0; i < 4; ++i) row[i] = col_row(k, std::min(std::max(first + i, int64_t(0)), h1 - 1));
          combine_rows(row, t, x.data() + k * xs + r * stride + 1, w);
        }
    }
    Stage& y0 = stages[0];
    const int64_t lanes = nr * stride;  // a multiple of kLanes
    for (int64_t l0 = 0; l0 < lanes; l0 += kPixels) {
      const int64_t n = std::min(kPixels, lanes - l0);
      for (int64_t k = 0; k < n_grids; ++k) x_rows[k] = x.data() + k * xs + l0;
      // the band's rows are consecutive slots of the ring (o0 is a multiple of band)
      run_layers<false>(mlp, x_rows.data(), n, act, act_max, y0.row(0, o0) + l0, y0.rows * stride, -act_max, act_max);
    }
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t r = o0; r < o1; ++r) fill_edges(y0.row(c, r), w);
    done[0] = o1;
    for (int64_t s = 1; s <= n_conv; ++s) {
      const double* t = conv + (s - 1) * (channels * channels * 9 + channels);
      const double* bias = t + channels * channels * 9;
      Stage &src = stages[s - 1], &dst = stages[s];
      for (; done[s] < h && (done[s - 1] == h || done[s - 1] >= done[s] + 2); ++done[s]) {
        const int64_t r = done[s];
        for (int64_t c = 0; c < channels; ++c) {
          for (int64_t ky = 0; ky < 3; ++ky) conv_in[c * 3 + ky] = src.row(c, std::min(std::max(r - 1 + ky, int64_t(0)), h - 1));
          conv_out[c] = dst.row(c, r);
        }
        switch (channels) {
          case 1: conv_row<1>(conv_in.data(), conv_out.data(), channels, w, t, bias, act_max); break;
          case 3: conv_row<3>(conv_in.data(), conv_out.data(), channels, w, t, bias, act_max); break;
          default: conv_row<0>(conv_in.data(), conv_out.data(), channels, w, t, bias, act_max); break;
        }
        for (int64_t c = 0; c < channels; ++c) fill_edges(conv_out[c], w);
      }
    }
    for (; stored < done[n_conv]; ++stored) {
      if (bit_depth == 8) store_row(static_cast<uint8_t*>(image), stored);
      else store_row(static_cast<uint16_t*>(image), stored);
    }
  }
  return 0;
}

}  // namespace

extern "C" {

int coolchic_decoder_kernels_version() { return 4; }
// SHA-256 of this file, passed by the build (coolchic.nativebuild): a library whose source
// has changed since it was built is not loaded.
#ifndef COOLCHIC_SOURCE_SHA
#define COOLCHIC_SOURCE_SHA ""
#endif
const char* coolchic_source_sha() { return COOLCHIC_SOURCE_SHA; }

// The entry points: no C++ exception may cross into the caller (an allocation failure on
// a huge image returns kOutOfMemory instead).
constexpr int kOutOfMemory = 100;

// Decodes every latent into `buffer` (the flat float64 buffer of latents.Layout, zeros
// where nothing is decoded), in the order of latents.Schedule (by wave, then grid, then
// row), which it computes from the grids' shapes. Returns 0, or: 1 main stream invalid, 2
// escape stream invalid, 3 escape code too long, 4 escape value out of range, 5 main
// stream not read to its end, 6 escape stream not read to its end, 7 arguments that do
// not describe a latents.Layout or an ARM that fits it.
//
// offsets (n_ctx,): flat offsets of the context neighbours. The buffer's rows have
// row_width cells; grid g's block is cells starts[g] .. starts[g + 1] - 1 (starts has
// n_grids + 1 entries, from 0), its rows widths[g] latents wide. dims holds (inputs, outputs) of each of the n_layers layers of the ARM, params
// their weights (inputs, outputs) input-major then biases, folded as in IntegerArm (hidden
// layers at 2^-8, bounded by act_max); the last layer has 2 outputs: mean + half a step in
// 2^-mu_frac_bits, and the ln-scale index. cdf is (n_mu * n_scale, alphabet + 1) with
// alphabet 63 (coolchic.entropy.tables.ALPHABET: rows of 64 entries, searched 64 at once).
int coolchic_decode_latents(
    const uint32_t* main_words, int64_t n_main, const uint32_t* escape_words, int64_t n_escape,
    const int64_t* offsets, int64_t n_ctx, int64_t row_width, int64_t n_grids, const int64_t* starts,
    const int64_t* widths,
    int64_t n_layers, const int64_t* dims, const double* params, double act_max,
    const uint32_t* cdf, int64_t alphabet, int64_t radius,
    int64_t mu_frac_bits, int64_t n_scale, int64_t latent_max,
    int64_t max_prefix, int64_t max_extra, double* buffer) {
  try {
    const Layers arm(n_layers, dims, params);
    if (!arm.valid() || arm.n_in[0] != n_ctx || arm.n_out[n_layers - 1] != 2 || alphabet + 1 != kRow64) return 7;
    const LatentParams p{cdf, alphabet, radius, mu_frac_bits, n_scale, latent_max, max_prefix, max_extra};
    auto run = [&](auto& net) -> int {
      return decode_latents(main_words, n_main, escape_words, n_escape, offsets, n_ctx, row_width, n_grids, starts,
                            widths, net, p, buffer);
    };
    // the ARMs of coolchic.config.ARCHS with their sizes compiled in; any other at run time
    if (FixedArm<12, 12, 12>::matches(arm)) {
      FixedArm<12, 12, 12> net(arm, act_max);
      return run(net);
    }
    if (FixedArm<12, 12, 0>::matches(arm)) {
      FixedArm<12, 12, 0> net(arm, act_max);
      return run(net);
    }
    if (FixedArm<8, 8, 0>::matches(arm)) {
      FixedArm<8, 8, 0> net(arm, act_max);
      return run(net);
    }
    if (FixedArm<8, 8, 8>::matches(arm)) {
      FixedArm<8, 8, 8> net(arm, act_max);
      return run(net);
    }
    GenericArm net(arm, act_max);
    return run(net);
  } catch (...) {
    return kOutOfMemory;
  }
}

// The synthesis of coolchic.decoder.reconstruct.synthesize. grids: n_grids int64 planes (finest
// first, grid k of shape shapes[2k] x shapes[2k+1]); the per-pixel layers as for the ARM
// (dims (inputs, outputs), params weights input-major then biases, at 2^-16; the last
// layer's outputs are the C channels); conv: n_conv residual 3x3 convolutions, each C*C*9
// taps (out, in, ky, kx) then C biases, folded to 2^-16; taps: (n_grids - 1, 4)
// upsampling taps over 2^10, row l into grid l; image: (H, W, C) uint8 (bit_depth 8) or
// uint16. Returns 0, or 1 when a size is out of range.
int coolchic_synthesize(int64_t n_grids, const int64_t* const* grids, const int64_t* shapes,
                        int64_t n_layers, const int64_t* dims, const double* params,
                        int64_t n_conv, const double* conv, const double* taps, double act_max,
                        int64_t bit_depth, void* image) {
  try {
    if (n_layers < 1 || n_conv < 0) return 1;
    const Layers mlp(n_layers, dims, params);
    return synthesize(n_grids, grids, shapes, mlp, n_conv, conv, taps, act_max, bit_depth, image);
  } catch (...) {
    return kOutOfMemory;
  }
}

}  // extern "C"
