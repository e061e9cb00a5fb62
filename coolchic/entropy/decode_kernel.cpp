// The decoder's latent loop as one native call: for each wave of the schedule, gather the
// contexts, run the integer ARM, turn its outputs into table rows and centres, and range
// decode one symbol per latent (with its Exp-Golomb escape extra where there is one).
//
// It computes exactly what the numpy path of coolchic/entropy/latents.py computes (tests
// compare the two bit for bit), so the bitstream format does not depend on it:
// * the ARM works on integers held in doubles, with the matrices of
//   coolchic.entropy.fixedpoint.IntegerArm (bias and power-of-two rescaling folded in).
//   Every product and partial sum is an integer multiple of a power of two below 2^53, so
//   each is exact and the order of the additions (or a fused multiply-add) cannot change a
//   result. No -ffast-math: floor and the clip must keep their IEEE meaning.
// * the range decoder is the algorithm of constriction 0.5's queue::RangeDecoder with
//   32-bit words, a 64-bit state and 24-bit probabilities (Pasco-style range coding:
//   lower, range and a 64-bit window `point` into the words), reimplemented here on the
//   same exact integer tables that the encoder hands to constriction.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int kPrecision = 24;                     // probability bits
constexpr uint64_t kWordRange = uint64_t(1) << 32;  // renormalize when range falls below

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
  // data cannot have come from the encoder. cdf has alphabet + 1 entries, 0 .. 2^24.
  inline int decode(const uint32_t* cdf, int alphabet) {
    const uint64_t scale = range >> kPrecision;
    const uint64_t quantile = (point - lower) / scale;
    if (quantile >= (uint64_t(1) << kPrecision)) return -1;
    int lo = 0, hi = alphabet;  // cdf[lo] <= quantile < cdf[hi]
    while (hi - lo > 1) {
      const int mid = (lo + hi) >> 1;
      if (cdf[mid] <= quantile) lo = mid; else hi = mid;
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
    const int bit = escape.decode(kBit, 2);
    if (bit < 0) return -2;
    if (bit == 1) break;
    if (++zeros > max_prefix) return -3;
  }
  uint64_t v = 1;
  for (int64_t i = 0; i < zeros; ++i) {
    const int bit = escape.decode(kBit, 2);
    if (bit < 0) return -2;
    v = (v << 1) | uint64_t(bit);
  }
  const int64_t extra = int64_t(v) - 1;
  return extra > max_extra ? -4 : extra;
}

constexpr int64_t kLanes = 8;  // latents per register block (waves padded to a multiple)
constexpr int64_t kCols = 4;   // outputs per register block (matrices padded to a multiple)

// out (cols, n) = g(in (rows, n) . m (rows, cols)) with g = floor then clip to [0, act_max]
// (hidden layers) or floor (last layer); m is padded to a multiple of kCols columns with
// zeros, n is a multiple of kLanes. Column-major over the latents of a wave, so that a
// block of kLanes latents by kCols outputs stays in registers while the inputs stream by.
void layer(const double* __restrict m, int64_t rows, int64_t cols, const double* __restrict in,
           double* __restrict out, int64_t n, bool hidden, double act_max) {
  for (int64_t j0 = 0; j0 < cols; j0 += kCols) {
    for (int64_t r0 = 0; r0 < n; r0 += kLanes) {
      double acc[kCols][kLanes] = {};
      for (int64_t k = 0; k < rows; ++k) {
        const double* __restrict a = in + k * n + r0;
        const double* __restrict w = m + k * cols + j0;
        for (int64_t j = 0; j < kCols; ++j)
          for (int64_t r = 0; r < kLanes; ++r) acc[j][r] += w[j] * a[r];
      }
      for (int64_t j = 0; j < kCols; ++j) {
        double* __restrict o = out + (j0 + j) * n + r0;
        for (int64_t r = 0; r < kLanes; ++r) {
          const double v = std::floor(acc[j][r]);
          o[r] = hidden ? std::min(std::max(v, 0.0), act_max) : v;  // ReLU, bounded
        }
      }
    }
  }
}

}  // namespace

extern "C" {

int coolchic_decode_kernel_version() { return 1; }

// Decodes every latent into `buffer` (the flat float64 buffer of latents.Schedule, zeros
// where nothing is decoded). Returns 0, or: 1 main stream invalid, 2 escape stream
// invalid, 3 escape code too long, 4 escape value out of range, 5 main stream not read to
// its end, 6 escape stream not read to its end.
//
// dims holds (rows, cols) of each of the n_layers matrices (row-major, concatenated in
// `matrices`): rows = inputs + 1 (the constant 1), cols = outputs (+ 1 carrying the
// constant on, hidden layers); the last layer has 2 columns: mean + half a step in
// 2^-mu_frac_bits, and the ln-scale index. cdf is (n_mu * n_scale, alphabet + 1).
int coolchic_decode_latents(
    const uint32_t* main_words, int64_t n_main, const uint32_t* escape_words, int64_t n_escape,
    const int64_t* order, const int64_t* wave_bounds, int64_t n_waves,
    const int64_t* offsets, int64_t n_ctx,
    int64_t n_layers, const int64_t* dims, const double* matrices, double act_max,
    const uint32_t* cdf, int64_t alphabet, int64_t radius,
    int64_t mu_frac_bits, int64_t n_scale, int64_t latent_max,
    int64_t max_prefix, int64_t max_extra, double* buffer) {
  int64_t widest = 1, most = 1;
  for (int64_t w = 0; w < n_waves; ++w) most = std::max(most, wave_bounds[w + 1] - wave_bounds[w]);
  most = (most + kLanes - 1) / kLanes * kLanes;
  // the matrices with their columns padded to a multiple of kCols (zero weights)
  std::vector<int64_t> padded(n_layers);
  std::vector<double> packed;
  for (int64_t l = 0; l < n_layers; ++l) {
    const int64_t rows = dims[2 * l], cols = dims[2 * l + 1];
    padded[l] = (cols + kCols - 1) / kCols * kCols;
    widest = std::max({widest, rows, padded[l]});
    for (int64_t k = 0; k < rows; ++k)
      for (int64_t j = 0; j < padded[l]; ++j) packed.push_back(j < cols ? matrices[k * cols + j] : 0.0);
    matrices += rows * cols;
  }
  std::vector<double> a(widest * most, 0.0), b(widest * most, 0.0);
  RangeDecoder main(main_words, n_main), escape(escape_words, n_escape);
  const int64_t mu_mask = (int64_t(1) << mu_frac_bits) - 1;
  const int64_t high_escape = 2 * radius;

  for (int64_t w = 0; w < n_waves; ++w) {
    const int64_t start = wave_bounds[w], count = wave_bounds[w + 1] - start;
    if (count == 0) continue;  // images narrower than the wavefront slope have empty waves
    const int64_t n = (count + kLanes - 1) / kLanes * kLanes;  // padding lanes: computed, unused
    const int64_t* where = order + start;
    for (int64_t k = 0; k < n_ctx; ++k) {  // contexts (n_ctx + 1, n), the constant 1 last
      double* row = a.data() + k * n;
      for (int64_t r = 0; r < count; ++r) row[r] = buffer[where[r] + offsets[k]];
      std::fill(row + count, row + n, 0.0);
    }
    std::fill(a.data() + n_ctx * n, a.data() + (n_ctx + 1) * n, 1.0);
    double *in = a.data(), *out = b.data();
    const double* m = packed.data();
    for (int64_t l = 0; l < n_layers; ++l) {
      const int64_t rows = dims[2 * l];
      layer(m, rows, padded[l], in, out, n, l + 1 < n_layers, act_max);
      m += rows * padded[l];
      std::swap(in, out);
    }
    const double* mean = in;  // (2, n) after the last swap
    const double* log_scale = in + n;
    for (int64_t r = 0; r < count; ++r) {
      const int64_t v0 = int64_t(mean[r]);
      const int64_t scale_index = std::min(std::max(int64_t(log_scale[r]), int64_t(0)), n_scale - 1);
      const int64_t row = (v0 & mu_mask) * n_scale + scale_index;
      // floor(mu + 1/2): an arithmetic shift floors negative values too
      const int64_t center = std::min(std::max(v0 >> mu_frac_bits, -latent_max), latent_max);
      const int s = main.decode(cdf + row * (alphabet + 1), int(alphabet));
      if (s < 0) return 1;
      int64_t d = s - radius;
      if (s == 0 || s == high_escape) {
        const int64_t extra = decode_extra(escape, max_prefix, max_extra);
        if (extra < 0) return int(-extra);
        d = (s == 0 ? -1 : 1) * (radius + extra);
      }
      buffer[where[r]] = double(center + d);
    }
  }
  if (!main.exhausted()) return 5;
  if (!escape.exhausted()) return 6;
  return 0;
}

}  // extern "C"
