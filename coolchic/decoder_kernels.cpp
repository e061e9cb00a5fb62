// The decoder's two loops as native calls (loaded by coolchic/native_decoder.py):
// * coolchic_decode_latents: for each wave of the schedule, gather the contexts, run the
//   integer ARM, turn its outputs into table rows and centres, and range decode one symbol
//   per latent (with its Exp-Golomb escape extra where there is one);
// * coolchic_synthesize: the fixed-point upsampling cascade, the per-pixel layers, the
//   residual 3x3 convolutions and the rounding to the output's integer levels.
//
// They compute exactly what the numpy paths (coolchic/entropy/latents.py and
// coolchic/reconstruct.py) compute (tests compare them bit for bit), so the bitstream
// format does not depend on them:
// * values are integers (or integer multiples of a power of two) held in doubles, with
//   the layer matrices of the numpy paths (bias and power-of-two rescaling folded in).
//   Every product and partial sum stays exactly representable (below 2^53), so the order
//   of the additions (or a fused multiply-add) cannot change a result. No -ffast-math:
//   floor and the clips must keep their IEEE meaning.
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

// out (cols, n) = clip(floor(in (rows, n) . m (rows, cols)), lo, hi); m is padded to a
// multiple of kCols columns with zeros, n is a multiple of kLanes. Column-major over the
// latents or pixels, so that a block of kLanes of them by kCols outputs stays in registers
// while the inputs stream by.
void layer(const double* __restrict m, int64_t rows, int64_t cols, const double* __restrict in,
           double* __restrict out, int64_t n, double lo, double hi) {
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
        for (int64_t r = 0; r < kLanes; ++r) o[r] = std::min(std::max(std::floor(acc[j][r]), lo), hi);
      }
    }
  }
}

// Row-major (rows, cols) matrices, concatenated, with their columns padded to a multiple
// of kCols (zero weights); returns the padded column counts.
std::vector<int64_t> pad_columns(int64_t n_layers, const int64_t* dims, const double* matrices,
                                 std::vector<double>& packed) {
  std::vector<int64_t> padded(n_layers);
  for (int64_t l = 0; l < n_layers; ++l) {
    const int64_t rows = dims[2 * l], cols = dims[2 * l + 1];
    padded[l] = (cols + kCols - 1) / kCols * kCols;
    for (int64_t k = 0; k < rows; ++k)
      for (int64_t j = 0; j < padded[l]; ++j) packed.push_back(j < cols ? matrices[k * cols + j] : 0.0);
    matrices += rows * cols;
  }
  return padded;
}

// --- synthesis -------------------------------------------------------------------------

// One level's 2x upsampling: taps over 2^10 (coolchic.reconstruct.UPS_FRAC); output 2j
// reads inputs j-2 .. j+1 with them, output 2j+1 inputs j-1 .. j+2 with them reversed;
// inputs outside the axis read its nearest edge; every output is floored, then clipped to
// +-2^36 (coolchic.reconstruct.UPS_MAX).
constexpr double kUpsMax = 68719476736.0;  // 2^36

struct Taps {
  double t[4];
  double out(double a, double b, double c, double d) const {
    const double v = std::floor((t[0] * a + t[1] * b + t[2] * c + t[3] * d) * (1.0 / 1024.0));
    return std::min(std::max(v, -kUpsMax), kUpsMax);
  }
};

// One 2x pass along a row: n inputs -> n_out outputs (n_out <= 2n).
void upsample_row(const double* __restrict in, int64_t n, double* __restrict out, int64_t n_out,
                  const Taps& k) {
  auto at = [&](int64_t i) { return in[std::min(std::max(i, int64_t(0)), n - 1)]; };
  const Taps r{{k.t[3], k.t[2], k.t[1], k.t[0]}};
  auto even = [&](int64_t j, double a, double b, double c, double d) {
    if (2 * j < n_out) out[2 * j] = k.out(a, b, c, d);
  };
  auto odd = [&](int64_t j, double b, double c, double d, double e) {
    if (2 * j + 1 < n_out) out[2 * j + 1] = r.out(b, c, d, e);
  };
  const int64_t half = (n_out + 1) / 2;  // output pairs
  // interior: whole pairs (2j + 1 < n_out) whose inputs j - 2 .. j + 2 lie inside the row
  const int64_t lo = std::min<int64_t>(2, half), hi = std::max(lo, std::min(n_out / 2, n - 2));
  for (int64_t j = 0; j < lo; ++j) {  // the edges read clamped inputs
    even(j, at(j - 2), at(j - 1), at(j), at(j + 1));
    odd(j, at(j - 1), at(j), at(j + 1), at(j + 2));
  }
  for (int64_t j = lo; j < hi; ++j) {
    const double* x = in + j;
    out[2 * j] = k.out(x[-2], x[-1], x[0], x[1]);
    out[2 * j + 1] = r.out(x[-1], x[0], x[1], x[2]);
  }
  for (int64_t j = hi; j < half; ++j) {
    even(j, at(j - 2), at(j - 1), at(j), at(j + 1));
    odd(j, at(j - 1), at(j), at(j + 1), at(j + 2));
  }
}

// (h, w) -> (h, w_out) along the columns, then -> (h_out, w_out) along the rows; the row
// pass combines four whole input rows at a time (vectorized over the columns).
std::vector<double> upsample(const std::vector<double>& x, int64_t h, int64_t w, int64_t h_out,
                             int64_t w_out, const Taps& k) {
  std::vector<double> cols(h * w_out), out(h_out * w_out);
  for (int64_t r = 0; r < h; ++r) upsample_row(x.data() + r * w, w, cols.data() + r * w_out, w_out, k);
  for (int64_t o = 0; o < h_out; ++o) {
    const int64_t j = o >> 1, first = j - 2 + (o & 1);
    const double* row[4];
    for (int64_t t = 0; t < 4; ++t) row[t] = cols.data() + std::min(std::max(first + t, int64_t(0)), h - 1) * w_out;
    const double t0 = k.t[(o & 1) ? 3 : 0], t1 = k.t[(o & 1) ? 2 : 1];
    const double t2 = k.t[(o & 1) ? 1 : 2], t3 = k.t[(o & 1) ? 0 : 3];
    double* __restrict dst = out.data() + o * w_out;
    for (int64_t c = 0; c < w_out; ++c) {
      const double v = std::floor((t0 * row[0][c] + t1 * row[1][c] + t2 * row[2][c] + t3 * row[3][c]) * (1.0 / 1024.0));
      dst[c] = std::min(std::max(v, -kUpsMax), kUpsMax);
    }
  }
  return out;
}

}  // namespace


// Decodes every latent into `buffer` (the flat float64 buffer of latents.Schedule, zeros
// where nothing is decoded). Returns 0, or: 1 main stream invalid, 2 escape stream
// invalid, 3 escape code too long, 4 escape value out of range, 5 main stream not read to
// its end, 6 escape stream not read to its end.
//
// dims holds (rows, cols) of each of the n_layers matrices (row-major, concatenated in
// `matrices`): rows = inputs + 1 (the constant 1), cols = outputs (+ 1 carrying the
// constant on, hidden layers); the last layer has 2 columns: mean + half a step in
// 2^-mu_frac_bits, and the ln-scale index. cdf is (n_mu * n_scale, alphabet + 1).
static int decode_latents(
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
  std::vector<double> packed;
  const std::vector<int64_t> padded = pad_columns(n_layers, dims, matrices, packed);
  for (int64_t l = 0; l < n_layers; ++l) widest = std::max({widest, dims[2 * l], padded[l]});
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
      const bool hidden = l + 1 < n_layers;  // ReLU, bounded; the last layer only floored
      layer(m, rows, padded[l], in, out, n, hidden ? 0.0 : -HUGE_VAL, hidden ? act_max : HUGE_VAL);
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

// The synthesis of coolchic.reconstruct.synthesize. grids: n_grids int64 planes (finest
// first, grid k of shape shapes[2k] x shapes[2k+1]); the per-pixel layers as for the ARM
// (input-major (inputs + 1, outputs [+ 1]) matrices at 2^-16, the last one's outputs are
// the C channels); conv: n_conv residual 3x3 convolutions, each C*C*9 taps (out, in, ky,
// kx) then C biases, folded to 2^-16; taps: (n_grids - 1, 4) upsampling taps over 2^10, row
// l into grid l; image: (H, W, C) uint8 (bit_depth 8) or uint16.
// Returns 0, or 1 when a size is out of range.
static int synthesize(int64_t n_grids, const int64_t* const* grids, const int64_t* shapes,
                        int64_t n_layers, const int64_t* dims, const double* matrices,
                        int64_t n_conv, const double* conv, const double* taps, double act_max,
                        int64_t bit_depth, void* image) {
  const int64_t h = shapes[0], w = shapes[1], npx = h * w;
  const int64_t channels = dims[2 * n_layers - 1];
  if (n_grids < 1 || channels < 1 || dims[0] != n_grids + 1) return 1;
  const double unit = 65536.0;  // 2^SYN_FRAC
  // the inputs of the per-pixel layers: grid 0, then every coarser grid upsampled in a
  // cascade (columns then rows at each level, floored after each pass)
  std::vector<std::vector<double>> planes(n_grids);
  for (int64_t k = 0; k < n_grids; ++k) {
    int64_t gh = shapes[2 * k], gw = shapes[2 * k + 1];
    std::vector<double> x(gh * gw);
    for (int64_t i = 0; i < gh * gw; ++i) x[i] = double(grids[k][i]) * unit;
    for (int64_t l = k - 1; l >= 0; --l) {
      const Taps k{{taps[4 * l], taps[4 * l + 1], taps[4 * l + 2], taps[4 * l + 3]}};
      x = upsample(x, gh, gw, shapes[2 * l], shapes[2 * l + 1], k);
      gh = shapes[2 * l];
      gw = shapes[2 * l + 1];
    }
    planes[k] = std::move(x);
  }
  std::vector<double> packed;
  const std::vector<int64_t> padded = pad_columns(n_layers, dims, matrices, packed);
  int64_t widest = 1;
  for (int64_t l = 0; l < n_layers; ++l) widest = std::max({widest, dims[2 * l], padded[l]});
  const int64_t chunk = 512;  // pixels per pass of the layers (a multiple of kLanes)
  std::vector<double> a(widest * chunk), b(widest * chunk);
  std::vector<double> y(channels * npx);  // (C, H * W)
  for (int64_t p0 = 0; p0 < npx; p0 += chunk) {
    const int64_t count = std::min(chunk, npx - p0);
    for (int64_t k = 0; k < n_grids; ++k) {
      std::copy(planes[k].data() + p0, planes[k].data() + p0 + count, a.data() + k * chunk);
      std::fill(a.data() + k * chunk + count, a.data() + (k + 1) * chunk, 0.0);
    }
    std::fill(a.data() + n_grids * chunk, a.data() + (n_grids + 1) * chunk, 1.0);
    double *in = a.data(), *out = b.data();
    const double* m = packed.data();
    for (int64_t l = 0; l < n_layers; ++l) {
      const bool hidden = l + 1 < n_layers;
      layer(m, dims[2 * l], padded[l], in, out, chunk, hidden ? 0.0 : -act_max, act_max);
      m += dims[2 * l] * padded[l];
      std::swap(in, out);
    }
    for (int64_t c = 0; c < channels; ++c) std::copy(in + c * chunk, in + c * chunk + count, y.data() + c * npx + p0);
  }
  // residual 3x3 convolutions, edges replicated: y = clip(y + clip(floor(conv(y))))
  const int64_t pw = w + 2;
  std::vector<double> src(channels * (h + 2) * pw), row(w);
  for (int64_t layer_index = 0; layer_index < n_conv; ++layer_index) {
    const double* taps = conv + layer_index * (channels * channels * 9 + channels);
    const double* bias = taps + channels * channels * 9;
    for (int64_t c = 0; c < channels; ++c) {  // padded copy of y
      double* p = src.data() + c * (h + 2) * pw;
      for (int64_t r = 0; r < h + 2; ++r) {
        const double* line = y.data() + c * npx + std::min(std::max(r - 1, int64_t(0)), h - 1) * w;
        double* dst = p + r * pw;
        std::copy(line, line + w, dst + 1);
        dst[0] = line[0];
        dst[w + 1] = line[w - 1];
      }
    }
    for (int64_t co = 0; co < channels; ++co) {
      for (int64_t r = 0; r < h; ++r) {
        std::fill(row.begin(), row.end(), bias[co]);
        for (int64_t ci = 0; ci < channels; ++ci) {
          const double* p = src.data() + ci * (h + 2) * pw;
          for (int64_t ky = 0; ky < 3; ++ky) {
            for (int64_t kx = 0; kx < 3; ++kx) {
              const double t = taps[((co * channels + ci) * 3 + ky) * 3 + kx];
              const double* line = p + (r + ky) * pw + kx;
              for (int64_t c = 0; c < w; ++c) row[c] += t * line[c];
            }
          }
        }
        double* out = y.data() + co * npx + r * w;
        const double* centre = src.data() + co * (h + 2) * pw + (r + 1) * pw + 1;
        for (int64_t c = 0; c < w; ++c) {
          const double v = std::min(std::max(std::floor(row[c]), -act_max), act_max);
          out[c] = std::min(std::max(v + centre[c], -act_max), act_max);
        }
      }
    }
  }
  // round to the output's integer levels: floor(y * max / 2^16 + 1/2), clipped
  const double max_value = double((int64_t(1) << bit_depth) - 1);
  const double factor = max_value / unit;
  auto store = [&](auto* out) {
    for (int64_t c = 0; c < channels; ++c) {
      const double* plane = y.data() + c * npx;
      for (int64_t p = 0; p < npx; ++p)
        out[p * channels + c] = std::min(std::max(std::floor(plane[p] * factor + 0.5), 0.0), max_value);
    }
  };
  if (bit_depth == 8) store(static_cast<uint8_t*>(image));
  else store(static_cast<uint16_t*>(image));
  return 0;
}

extern "C" {

int coolchic_decoder_kernels_version() { return 2; }
// SHA-256 of this file, passed by the build (coolchic.nativebuild): a library whose source
// has changed since it was built is not loaded.
#ifndef COOLCHIC_SOURCE_SHA
#define COOLCHIC_SOURCE_SHA ""
#endif
const char* coolchic_source_sha() { return COOLCHIC_SOURCE_SHA; }

// The entry points: no C++ exception may cross into the caller (an allocation failure on
// a huge image returns kOutOfMemory instead).
constexpr int kOutOfMemory = 100;

int coolchic_decode_latents(
    const uint32_t* main_words, int64_t n_main, const uint32_t* escape_words, int64_t n_escape,
    const int64_t* order, const int64_t* wave_bounds, int64_t n_waves,
    const int64_t* offsets, int64_t n_ctx,
    int64_t n_layers, const int64_t* dims, const double* matrices, double act_max,
    const uint32_t* cdf, int64_t alphabet, int64_t radius,
    int64_t mu_frac_bits, int64_t n_scale, int64_t latent_max,
    int64_t max_prefix, int64_t max_extra, double* buffer) {
  try {
    return decode_latents(main_words, n_main, escape_words, n_escape, order, wave_bounds, n_waves,
                          offsets, n_ctx, n_layers, dims, matrices, act_max, cdf, alphabet, radius,
                          mu_frac_bits, n_scale, latent_max, max_prefix, max_extra, buffer);
  } catch (...) {
    return kOutOfMemory;
  }
}

int coolchic_synthesize(int64_t n_grids, const int64_t* const* grids, const int64_t* shapes,
                        int64_t n_layers, const int64_t* dims, const double* matrices,
                        int64_t n_conv, const double* conv, const double* taps, double act_max,
                        int64_t bit_depth, void* image) {
  try {
    return synthesize(n_grids, grids, shapes, n_layers, dims, matrices, n_conv, conv, taps, act_max,
                      bit_depth, image);
  } catch (...) {
    return kOutOfMemory;
  }
}

}  // extern "C"
