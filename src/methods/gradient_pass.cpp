#include "methods/gradient_pass.hpp"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <set>

#include "salient/gradient.hpp"

namespace salient {
namespace detail {

namespace {

const std::set<std::string> kInputGradient = {"vanilla", "input_x_gradient", "fullgrad"};
const std::set<std::string> kGuided = {"guided_backprop", "guided_gradcam"};
const std::set<std::string> kLayerGradient = {"gradcam",  "gradcam_plusplus",    "xgradcam",     "hirescam",
                                              "layercam", "gradcam_elementwise", "eigengradcam", "guided_gradcam"};
const std::set<std::string> kLayer = {"gradcam",  "gradcam_plusplus",    "xgradcam", "hirescam",     "layercam",
                                      "gradcam_elementwise", "eigencam", "eigengradcam", "guided_gradcam"};

bool any_of(const std::vector<std::string>& methods, const std::set<std::string>& set) {
  return std::any_of(methods.begin(), methods.end(), [&](const std::string& m) { return set.count(m) > 0; });
}

double dot(const double* a, const double* b, int64_t n) {
  // Four partial sums: a single one serialises the loop on the add latency.
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) s0 += a[i] * b[i], s1 += a[i + 1] * b[i + 1], s2 += a[i + 2] * b[i + 2], s3 += a[i + 3] * b[i + 3];
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

void axpy(double a, const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// Top eigenpair of the symmetric tridiagonal matrix with diagonal a [m] and off-diagonal
// b [m-1]: the eigenvalue by bisection on Sturm counts, the unit eigenvector y [m] by
// inverse iteration (elimination with partial pivoting, as LAPACK's dstein). O(m) work
// per step, where a dense eigendecomposition would cost more than the Lanczos steps.
double top_tridiagonal(const std::vector<double>& a, const std::vector<double>& b, int64_t m, double* y) {
  double lo = a[0], hi = a[0], scale = 0;
  for (int64_t i = 0; i < m; ++i) {
    const double r = (i > 0 ? std::abs(b[i - 1]) : 0.0) + (i + 1 < m ? std::abs(b[i]) : 0.0);
    lo = std::min(lo, a[i] - r), hi = std::max(hi, a[i] + r), scale = std::max(scale, std::abs(a[i]) + r);
  }
  const double tiny = std::numeric_limits<double>::min() / std::numeric_limits<double>::epsilon();
  const double eps = std::numeric_limits<double>::epsilon();
  auto below = [&](double x) {  // how many eigenvalues are < x
    int64_t count = 0;
    double d = 1;
    for (int64_t i = 0; i < m; ++i) {
      d = a[i] - x - (i > 0 ? b[i - 1] * b[i - 1] / d : 0.0);
      if (d == 0) d = -tiny;
      count += d < 0;
    }
    return count;
  };
  for (int it = 0; it < 200 && hi - lo > 2 * eps * std::max(std::abs(lo), std::abs(hi)) + tiny; ++it) {
    const double mid = 0.5 * (lo + hi);
    (below(mid) == m ? hi : lo) = mid;
  }
  const double theta = 0.5 * (lo + hi);
  // Inverse iteration: (T - theta I) y = y, normalised, from y = 1. The matrix is nearly
  // singular by design; a zero pivot becomes eps * |T|.
  std::vector<double> d(m), u1(m), u2(m), rhs(m);
  std::fill(y, y + m, 1.0);
  for (int pass = 0; pass < 3; ++pass) {
    std::copy(y, y + m, rhs.begin());
    double c0 = a[0] - theta, c1 = m > 1 ? b[0] : 0.0, c2 = 0, cr = rhs[0];
    for (int64_t i = 0; i + 1 < m; ++i) {
      double n0 = b[i], n1 = a[i + 1] - theta, n2 = i + 2 < m ? b[i + 1] : 0.0, nr = rhs[i + 1];
      if (std::abs(n0) > std::abs(c0)) std::swap(c0, n0), std::swap(c1, n1), std::swap(c2, n2), std::swap(cr, nr);
      if (c0 == 0) c0 = eps * scale + tiny;
      const double f = n0 / c0;
      d[i] = c0, u1[i] = c1, u2[i] = c2, rhs[i] = cr;
      c0 = n1 - f * c1, c1 = n2 - f * c2, c2 = 0, cr = nr - f * cr;
    }
    d[m - 1] = c0 == 0 ? eps * scale + tiny : c0, rhs[m - 1] = cr;
    for (int64_t i = m - 1; i >= 0; --i)
      y[i] = (rhs[i] - (i + 1 < m ? u1[i] * y[i + 1] : 0.0) - (i + 2 < m ? u2[i] * y[i + 2] : 0.0)) / d[i];
    double norm = 0;
    for (int64_t i = 0; i < m; ++i) norm += y[i] * y[i];
    norm = std::sqrt(norm);
    for (int64_t i = 0; i < m; ++i) y[i] /= norm;
  }
  return theta;
}

// Unit top eigenvector v (k values) of a symmetric PSD operator A (apply(x, y): y = A x)
// whose trace is `trace`; returns its eigenvalue (0 and v = 0 for A = 0). Lanczos with
// full reorthogonalisation: a well-separated top eigenvalue (the usual case for
// activations) converges in about a dozen products, against O(k^3) for each step of
// repeated squaring or for an eigendecomposition; a close one restarts from the Ritz
// vector. A top eigenvalue shared by two directions has no unique eigenvector.
template <typename Apply>
double top_eigenvector(int64_t k, double trace, const Apply& apply, double* v) {
  const int64_t m_max = std::min<int64_t>(k, 48);
  std::vector<double> q((m_max + 1) * k), w(k), start(k);
  // A fixed start (reproducible maps) with a component along every direction.
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (int64_t i = 0; i < k; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    start[i] = 0.5 + static_cast<double>(state >> 11) / static_cast<double>(1ull << 53);
  }
  std::fill(v, v + k, 0.0);
  // The trace bounds the top eigenvalue: the scale for "numerically zero".
  if (!(trace > 0)) return 0;
  std::vector<double> alpha, beta;
  double theta = 0;
  for (int restart = 0; restart < 50; ++restart) {
    const double norm = std::sqrt(dot(start.data(), start.data(), k));
    if (!(norm > 0)) return 0;  // v is still zero
    for (int64_t i = 0; i < k; ++i) q[i] = start[i] / norm;
    alpha.clear(), beta.clear();
    bool invariant = false;
    int64_t m = 0;
    std::vector<double> y;
    double resid = 0;
    while (true) {
      double* qm = &q[m * k];
      apply(qm, w.data());
      alpha.push_back(dot(w.data(), qm, k));
      for (int pass = 0; pass < 2; ++pass)  // twice is enough (Kahan, Parlett)
        for (int64_t j = 0; j <= m; ++j) axpy(-dot(w.data(), &q[j * k], k), &q[j * k], w.data(), k);
      const double b = std::sqrt(dot(w.data(), w.data(), k));
      beta.push_back(b);
      ++m;
      invariant = b <= 1e-13 * trace || m == k;
      // The Ritz pair of the tridiagonal matrix at steps 6, 10, 14, ...: its residual is
      // |b * last component of the Ritz vector in the Lanczos basis|. A residual of 1e-9
      // of the eigenvalue puts the vector within about 1e-9 / (relative gap) of the true
      // one, far below the float32 map's resolution for a separated top component.
      if (invariant || m == m_max || (m >= 6 && m % 4 == 2)) {
        y.resize(m);
        theta = top_tridiagonal(alpha, beta, m, y.data());
        resid = std::abs(b * y[m - 1]);
        if (invariant || m == m_max || resid <= 1e-9 * std::abs(theta)) break;
      }
      for (int64_t i = 0; i < k; ++i) q[m * k + i] = w[i] / b;
    }
    if (!(theta > 0)) return 0;  // v is still zero
    for (int64_t j = 0; j < m; ++j) axpy(y[j], &q[j * k], v, k);
    if (invariant || resid <= 1e-9 * theta) return theta;
    std::copy(v, v + k, start.begin());
    std::fill(v, v + k, 0.0);
  }
  // Not converged in 50 restarts (a near-tie at the top): the last Ritz vector.
  std::copy(start.begin(), start.end(), v);
  return theta;
}

// First principal component of the positions: [N,C,h,w] -> [N,1,h,w], signed so that the
// map correlates positively with the channel mean of `m`. The projection M v1 of the
// centred [hw, C] matrix M on its first right singular vector comes from the top
// eigenvector of the smaller of M M^T (M v1 = s1 u1, s1^2 its eigenvalue) and M^T M.
// M is kept as its transpose [C, hw], the layout of the activations: no copy transposes.
at::Tensor principal_projection(const at::Tensor& m, const std::string& method, const char* what) {
  // The eigensolver is ours, on the CPU: a GPU's activations come over (a layer's [C, h, w]
  // per sample) and the map goes back.
  if (!m.device().is_cpu()) return principal_projection(m.to(at::kCPU), method, what).to(m.device());
  const int64_t n = m.size(0), c = m.size(1), h = m.size(2), w = m.size(3), hw = h * w;
  // M^T, centred, in double: one pass of our own (tensor ops took 3-6x as long here).
  const at::Tensor src = m.scalar_type() == at::kDouble ? m.contiguous() : m.to(at::kFloat).contiguous();
  at::Tensor mt = at::empty({n, c, hw}, at::kDouble);
  double* mtp = mt.data_ptr<double>();
  std::vector<char> finite(n * c, 1);  // NaN or Inf anywhere makes its row's sum non-finite
  at::parallel_for(0, n * c, 16, [&](int64_t b, int64_t e) {
    for (int64_t row = b; row < e; ++row) {
      double* o = mtp + row * hw;
      if (src.scalar_type() == at::kDouble)
        std::copy(src.data_ptr<double>() + row * hw, src.data_ptr<double>() + (row + 1) * hw, o);
      else
        std::copy(src.data_ptr<float>() + row * hw, src.data_ptr<float>() + (row + 1) * hw, o);
      double sum = 0;
      for (int64_t p = 0; p < hw; ++p) sum += o[p];
      finite[row] = std::isfinite(sum);
      const double mean = sum / static_cast<double>(hw);
      for (int64_t p = 0; p < hw; ++p) o[p] -= mean;
    }
  });
  SALIENT_CHECK(std::all_of(finite.begin(), finite.end(), [](char f) { return f != 0; }), method,
                ": non-finite values (NaN or Inf) in ", what);
  const bool over_rows = hw <= c;
  const int64_t k = over_rows ? hw : c;
  // The Gram matrix (hw C k multiply-adds, by BLAS) pays off against applying A through
  // M^T (2 hw C per product, a dozen or more products) while k is small; measured
  // crossover here between k = 128 (demo: Gram 0.17 ms, through M^T 0.20 ms) and 512.
  const bool gram = k <= 256;
  at::Tensor g;
  if (gram) g = (over_rows ? at::bmm(mt.transpose(1, 2), mt) : at::bmm(mt, mt.transpose(1, 2))).contiguous();
  const double* gp = gram ? g.data_ptr<double>() : nullptr;
  at::Tensor out = at::empty({n, 1, h, w}, m.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  const double* mp = mt.data_ptr<double>();
  at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
    std::vector<double> v(k), proj(hw), mean(hw), t(c + hw);
    for (int64_t i = b; i < e; ++i) {
      const double* mi = mp + i * c * hw;
      // A = M M^T (hw x hw) or M^T M (C x C): the Gram matrix by rows (it is symmetric),
      // or two passes over M^T [C, hw].
      const double* gi = gram ? gp + i * k * k : nullptr;
      auto apply = [&](const double* x, double* y) {
        if (gram) {
          std::fill(y, y + k, 0.0);
          for (int64_t j = 0; j < k; ++j) axpy(x[j], gi + j * k, y, k);
        } else if (over_rows) {
          for (int64_t ch = 0; ch < c; ++ch) t[ch] = dot(mi + ch * hw, x, hw);  // M^T x
          std::fill(y, y + hw, 0.0);
          for (int64_t ch = 0; ch < c; ++ch) axpy(t[ch], mi + ch * hw, y, hw);  // M (M^T x)
        } else {
          std::fill(t.begin(), t.begin() + hw, 0.0);
          for (int64_t ch = 0; ch < c; ++ch) axpy(x[ch], mi + ch * hw, t.data(), hw);  // M x
          for (int64_t ch = 0; ch < c; ++ch) y[ch] = dot(mi + ch * hw, t.data(), hw);  // M^T (M x)
        }
      };
      const double s2 = top_eigenvector(k, dot(mi, mi, c * hw), apply, v.data());
      if (over_rows) {
        for (int64_t p = 0; p < hw; ++p) proj[p] = v[p] * std::sqrt(s2);
      } else {
        std::fill(proj.begin(), proj.end(), 0.0);
        for (int64_t ch = 0; ch < c; ++ch) axpy(v[ch], mi + ch * hw, proj.data(), hw);
      }
      // The channel mean of the centred activations is the mean map minus its mean.
      std::fill(mean.begin(), mean.end(), 0.0);
      for (int64_t ch = 0; ch < c; ++ch) axpy(1.0, mi + ch * hw, mean.data(), hw);
      const double sign = dot(proj.data(), mean.data(), hw) < 0 ? -1.0 : 1.0;
      if (out.scalar_type() == at::kDouble)
        for (int64_t p = 0; p < hw; ++p) out.data_ptr<double>()[i * hw + p] = sign * proj[p];
      else
        for (int64_t p = 0; p < hw; ++p) out.data_ptr<float>()[i * hw + p] = static_cast<float>(sign * proj[p]);
    }
  });
  return m.scalar_type() == out.scalar_type() ? out : out.to(m.scalar_type());
}

// Min and max of |row[i]| over i < n; *nan is 0 unless some row[i] is NaN or infinite
// (row[i] - row[i] is NaN then). Compilers do not vectorise floating-point min/max
// reductions without fast-math: x86 CPUs with AVX2 run the hand-vectorised loop below.
void abs_range_portable(const float* row, int64_t n, float* mn, float* mx, float* nan) {
  float lo = std::numeric_limits<float>::infinity(), hi = 0, bad = 0;  // n = 0: neutral
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::abs(row[i]);
    lo = std::min(lo, v), hi = std::max(hi, v), bad += row[i] - row[i];
  }
  *mn = lo, *mx = hi, *nan = bad;
}

// a[i] += k·|row[i]| (compilers vectorise this one).
void add_abs_portable(float* a, const float* row, int64_t n, float k) {
  for (int64_t i = 0; i < n; ++i) a[i] += k * std::abs(row[i]);
}

// The same two loops in AVX2, chosen at run time (the build targets baseline x86-64). Two
// accumulators each: one serialises the loop on the min/max latency. About 3x the
// throughput of the SSE2 loop this replaced on FullGrad's terms (ResNet-50: 11M values).
#if defined(__GNUC__) && defined(__x86_64__)
#define SALIENT_AVX2_KERNELS 1
__attribute__((target("avx2"))) void abs_range_avx2(const float* row, int64_t n, float* mn, float* mx, float* nan) {
  int64_t i = 0;
  float lo = std::abs(row[0]), hi = lo, bad = 0;
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 lo0 = _mm256_set1_ps(lo), hi0 = lo0, lo1 = lo0, hi1 = lo0, vbad = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    const __m256 g0 = _mm256_loadu_ps(row + i), g1 = _mm256_loadu_ps(row + i + 8);
    const __m256 v0 = _mm256_andnot_ps(sign, g0), v1 = _mm256_andnot_ps(sign, g1);
    lo0 = _mm256_min_ps(lo0, v0), hi0 = _mm256_max_ps(hi0, v0), lo1 = _mm256_min_ps(lo1, v1), hi1 = _mm256_max_ps(hi1, v1);
    vbad = _mm256_add_ps(vbad, _mm256_add_ps(_mm256_sub_ps(g0, g0), _mm256_sub_ps(g1, g1)));
  }
  float l8[8], h8[8], b8[8];
  _mm256_storeu_ps(l8, _mm256_min_ps(lo0, lo1)), _mm256_storeu_ps(h8, _mm256_max_ps(hi0, hi1)), _mm256_storeu_ps(b8, vbad);
  for (int j = 0; j < 8; ++j) lo = std::min(lo, l8[j]), hi = std::max(hi, h8[j]), bad += b8[j];
  float tlo, thi, tbad;  // the remainder
  abs_range_portable(row + i, n - i, &tlo, &thi, &tbad);
  *mn = std::min(lo, tlo), *mx = std::max(hi, thi), *nan = bad + tbad;
}

__attribute__((target("avx2"))) void add_abs_avx2(float* a, const float* row, int64_t n, float k) {
  int64_t i = 0;
  const __m256 sign = _mm256_set1_ps(-0.0f), vk = _mm256_set1_ps(k);
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(a + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_mul_ps(vk, _mm256_andnot_ps(sign, _mm256_loadu_ps(row + i)))));
  add_abs_portable(a + i, row + i, n - i, k);
}
#endif

bool has_avx2() {
#if defined(SALIENT_AVX2_KERNELS)
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
#else
  return false;
#endif
}

void abs_range(const float* row, int64_t n, float* mn, float* mx, float* nan) {
#if defined(SALIENT_AVX2_KERNELS)
  if (has_avx2()) return abs_range_avx2(row, n, mn, mx, nan);
#endif
  abs_range_portable(row, n, mn, mx, nan);
}

void add_abs(float* a, const float* row, int64_t n, float k) {
#if defined(SALIENT_AVX2_KERNELS)
  if (has_avx2()) return add_abs_avx2(a, row, n, k);
#endif
  add_abs_portable(a, row, n, k);
}

// Σ_c (t_c - min t_c) / (max t_c - min t_c + 1e-7) with t_c = |scale_c · g_c|, min and
// max over the positions of each (sample, channel): [N,C,h,w] -> [N,1,h,w]. FullGrad runs
// it over every bias layer's gradient (11M values on a ResNet-50), so float CPU input is
// read once: each channel's range is found and its term added while the channel is still
// in cache, into one accumulator per thread. `scale` [C] may be undefined (1). *finite,
// when given: whether g had only finite values (checked on the way, without a pass of its
// own).
at::Tensor abs_minmax_channel_sum(const at::Tensor& g, const at::Tensor& scale, bool* finite = nullptr) {
  const int64_t n = g.size(0), c = g.size(1), h = g.size(2), w = g.size(3), hw = h * w;
  if (g.scalar_type() != at::kFloat || !g.device().is_cpu()) {
    at::Tensor t = (scale.defined() ? scale.view({1, -1, 1, 1}).to(g.dtype()) * g : g).abs();
    at::Tensor flat = t.reshape({n, c, hw});
    auto range = at::aminmax(flat, 2);
    const at::Tensor& lo = std::get<0>(range);
    at::Tensor inv = 1.0 / (std::get<1>(range) - lo + 1e-7);  // [N,C]
    at::Tensor sum = at::bmm(inv.unsqueeze(1), flat).squeeze(1) - (lo * inv).sum(1, /*keepdim=*/true);
    if (finite) *finite = all_finite(g);
    return sum.view({n, 1, h, w});
  }
  if (finite) *finite = true;
  if (n * c * hw == 0) return at::zeros({n, 1, h, w}, at::kFloat);
  const at::Tensor gc = g.contiguous();
  const at::Tensor sc = scale.defined() ? scale.to(at::kFloat).contiguous() : at::ones({c}, at::kFloat);
  const float* gp = gc.data_ptr<float>();
  const float* sp = sc.data_ptr<float>();
  const int64_t threads = at::get_num_threads();
  std::vector<float> acc(threads * n * hw, 0.0f), offset(threads * n, 0.0f), bad(threads, 0.0f);
  at::parallel_for(0, n * c, 1, [&](int64_t b, int64_t e) {
    const int64_t t = std::min<int64_t>(at::get_thread_num(), threads - 1);
    for (int64_t k = b; k < e; ++k) {
      const int64_t smp = k / c;
      // |s·g| = |s|·|g| and scaling by |s| keeps the order: the range of |g| scaled.
      const float s = std::abs(sp[k % c]);
      const float* row = gp + k * hw;
      float mn, mx, nan;
      abs_range(row, hw, &mn, &mx, &nan);
      bad[t] += nan;
      mn *= s, mx *= s;
      const float inv = 1.0f / (mx - mn + 1e-7f);
      offset[t * n + smp] += mn * inv;
      add_abs(acc.data() + (t * n + smp) * hw, row, hw, inv * s);
    }
  });
  if (finite) *finite = std::all_of(bad.begin(), bad.end(), [](float v) { return v == 0; });
  at::Tensor out = at::empty({n, 1, h, w}, at::kFloat);
  float* op = out.data_ptr<float>();
  for (int64_t smp = 0; smp < n; ++smp) {
    float off = 0;
    for (int64_t t = 0; t < threads; ++t) off += offset[t * n + smp];
    float* o = op + smp * hw;
    for (int64_t q = 0; q < hw; ++q) o[q] = -off;
    for (int64_t t = 0; t < threads; ++t) {
      const float* a = acc.data() + (t * n + smp) * hw;
      for (int64_t q = 0; q < hw; ++q) o[q] += a[q];
    }
  }
  return out;
}

// The raw CAM [N,1,h,w] of a gradient variant; *weights gets [N,C] channel weights for
// the variants that have them.
at::Tensor cam_raw(const std::string& method, const at::Tensor& a, const at::Tensor& g, at::Tensor* weights) {
  auto weighted = [&](const at::Tensor& w) {
    *weights = w;
    return (w.unsqueeze(-1).unsqueeze(-1) * a).sum(1, /*keepdim=*/true);
  };
  if (method == "gradcam" || method == "guided_gradcam") return weighted(g.mean({2, 3}));
  if (method == "gradcam_plusplus") {
    at::Tensor g2 = g * g, g3 = g2 * g;
    at::Tensor alpha = g2 / (2 * g2 + a.sum({2, 3}, /*keepdim=*/true) * g3 + 1e-6);
    alpha = at::where(g != 0, alpha, at::zeros_like(alpha));
    return weighted((at::relu(g) * alpha).sum({2, 3}));
  }
  if (method == "xgradcam") return weighted((g * a / (a.sum({2, 3}, /*keepdim=*/true) + 1e-7)).sum({2, 3}));
  if (method == "hirescam") return (g * a).sum(1, /*keepdim=*/true);
  if (method == "layercam") return (at::relu(g) * a).sum(1, /*keepdim=*/true);
  if (method == "gradcam_elementwise") return at::relu(g * a).sum(1, /*keepdim=*/true);
  if (method == "eigencam") return principal_projection(a, method, "the layer's activations");
  if (method == "eigengradcam") return principal_projection(g * a, method, "gradient x activation at the layer");
  SALIENT_FAIL("internal: '", method, "' is not a gradient CAM variant");
}

}  // namespace

bool shares_gradient_pass(const std::string& method) {
  return kInputGradient.count(method) || kGuided.count(method) || kLayer.count(method);
}

GradientPass gradient_pass(const Model& model, const at::Tensor& x, const Target& target, Score score,
                           const std::vector<std::string>& methods, const std::string& layer) {
  const char* name = methods.size() == 1 ? methods[0].c_str() : "explain";
  for (const auto& m : methods) SALIENT_CHECK(shares_gradient_pass(m), "internal: '", m, "' has no gradient pass");
  GradientPass p;
  p.x = checked_input(model, x, name);
  const bool input_grad = any_of(methods, kInputGradient), guided = any_of(methods, kGuided);
  const bool cam = any_of(methods, kLayer), cam_grad = any_of(methods, kLayerGradient);
  const bool bias = std::count(methods.begin(), methods.end(), "fullgrad") > 0;

  std::vector<std::string> taps;
  if (cam) {
    p.layer = layer.empty() ? model.default_cam_layer(sample_shape(p.x)) : layer;
    taps.push_back(p.layer);
  }
  if (bias) {
    p.bias_layers = model.bias_layers();
    for (const auto& l : p.bias_layers) taps.push_back(l.tap);
  }
  // A leaf of our own: the caller's tensor keeps its flags, and a model that writes into
  // its input cannot touch the caller's data.
  const bool to_input = input_grad || guided;
  at::Tensor leaf = to_input ? p.x.clone().requires_grad_(true) : p.x;
  // A backward to the input runs the BatchNorm-folded copy (with the taps and ReLU
  // outputs as extra outputs).
  Autograd mode = !to_input ? (cam_grad ? Autograd::FromTaps : Autograd::Off) : Autograd::Input;
  auto fr = model.forward(leaf, taps, mode, guided ? ReluGradient::Guided : ReluGradient::Standard);
  const int64_t n = p.x.size(0);
  p.forward_samples = n;
  if (cam) {
    SALIENT_CHECK(fr.taps[0].dim() == 4, name, ": layer '", p.layer, "' outputs ", shape_str(fr.taps[0].sizes()),
                  "; CAM methods need a 4-D [N, C, h, w] output (pick a convolutional layer)");
    p.act = fr.taps[0].detach();
  }
  p.targets = target.resolve(fr.output);
  p.output = fr.output.detach();
  if (mode == Autograd::Off) return p;

  at::Tensor s = target.scores(fr.output, p.targets, score).sum();
  // Each bias layer's gradient becomes its FullGrad term as the backward produces it,
  // summed per resolution: the gradients of the whole network are never held at once. The
  // hooks write only to `sink`; turning it off keeps a later (guided) backward out.
  struct BiasSink {
    bool active = true;
    std::string error;  // the first non-finite bias gradient
    std::map<std::pair<int64_t, int64_t>, at::Tensor> terms;
  };
  auto sink = std::make_shared<BiasSink>();
  if (bias) {
    const size_t first = cam ? 1 : 0;
    for (size_t i = 0; i < p.bias_layers.size(); ++i) {
      const at::Tensor& tap = fr.taps[first + i];
      if (!tap.requires_grad() || tap.dim() != 4 || tap.size(1) != p.bias_layers[i].bias.numel()) continue;
      const BiasLayer& l = p.bias_layers[i];
      at::Tensor scale = l.tap_scale.defined() ? l.bias * l.tap_scale : l.bias;
      tap.register_hook([sink, scale, path = l.path, name](const at::Tensor& g) {
        if (!sink->active) return;
        bool finite = true;
        at::Tensor term = abs_minmax_channel_sum(g, scale, &finite);
        if (!finite && sink->error.empty())
          sink->error = std::string(name) + ": non-finite values (NaN or Inf) in the gradient at layer '" + path + "'";
        at::Tensor& acc = sink->terms[{g.size(2), g.size(3)}];
        acc = acc.defined() ? acc.add_(term) : term;
      });
    }
    // The hooks hold what they need: the bias layers' outputs can go as soon as the
    // backward is done with them.
    for (size_t i = first; i < fr.taps.size(); ++i) fr.taps[i] = at::Tensor();
  }
  // The standard backward: to the input and the CAM layer at once.
  std::vector<at::Tensor> wrt;
  if (input_grad) wrt.push_back(leaf);
  if (cam_grad) wrt.push_back(fr.taps[0]);
  if (!wrt.empty()) {
    auto grads = torch::autograd::grad({s}, wrt, {}, /*retain_graph=*/guided, /*create_graph=*/false,
                                       /*allow_unused=*/true);
    sink->active = false;
    SALIENT_CHECK(sink->error.empty(), sink->error);
    p.bias_terms = std::move(sink->terms);
    size_t k = 0;
    if (input_grad) {
      p.input_grad = grads[k++];
      SALIENT_CHECK(p.input_grad.defined(), name, ": the score does not depend on the input");
      check_finite(p.input_grad, name, "the input gradient");
    }
    if (cam_grad) {
      p.act_grad = grads[k++];
      SALIENT_CHECK(p.act_grad.defined(), name, ": the score does not depend on layer '", p.layer, "'");
      check_finite(p.act_grad, name, ("the gradient at layer '" + p.layer + "'").c_str());
    }
    p.backward_samples += n;
  }
  if (guided) {
    // The ReLU hooks go on only now, so the backward above stayed standard.
    clamp_relu_gradients(fr);
    p.guided_grad = torch::autograd::grad({s}, {leaf})[0];
    check_finite(p.guided_grad, name, "the guided input gradient");
    p.backward_samples += n;
  }
  return p;
}

Attribution from_gradient_pass(const GradientPass& p, const std::string& method) {
  at::NoGradGuard no_grad;
  Attribution a;
  a.output = p.output;
  a.targets = p.targets;
  a.forward_samples = p.forward_samples;
  a.backward_samples = p.backward_samples;
  const int64_t height = p.x.size(2), width = p.x.size(3);
  if (method == "vanilla") {
    a.map = p.input_grad;
  } else if (method == "input_x_gradient") {
    a.map = p.input_grad * p.x;
  } else if (method == "guided_backprop") {
    a.map = p.guided_grad;
  } else if (method == "fullgrad") {
    at::Tensor map = abs_minmax_channel_sum(p.x * p.input_grad, at::Tensor());  // checked in the pass
    // Bilinear resizing is linear: the terms of one resolution (channels and layers) were
    // summed first and are resized once.
    for (const auto& kv : p.bias_terms)
      map = map + at::upsample_bilinear2d(kv.second, {height, width}, /*align_corners=*/false);
    a.map = map;
  } else if (kLayer.count(method)) {
    a.layer = p.layer;
    at::Tensor weights;
    at::Tensor raw = cam_raw(method, p.act, p.act_grad, &weights);
    finish_cam(&a, raw, weights, height, width);
    // Captum's GuidedGradCam: the CAM upsampled by nearest neighbour times guided backprop.
    if (method == "guided_gradcam") a.map = p.guided_grad * at::upsample_nearest2d(a.layer_map, {height, width});
  } else {
    SALIENT_FAIL("internal: '", method, "' has no gradient pass");
  }
  return a;
}

}  // namespace detail
}  // namespace salient
