// ROAD (Rong et al. 2022): removed pixels are filled by noisy linear imputation, so the
// score change measures lost information rather than the model's surprise at a hole.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <cmath>
#include <vector>

#include "eval/rank.hpp"
#include "methods/common.hpp"
#include "salient/metrics.hpp"

namespace salient {

namespace {

// Rong et al.'s system for one removed set: every removed pixel equals the weighted mean
// of its in-image neighbours (1/6 edge, 1/12 corner), known pixels fixed:
//   deg_i v_i - sum over removed neighbours w v_j = sum over known neighbours w x_k,
// deg_i being the sum of in-image neighbour weights. Symmetric and positive definite
// whenever a pixel is known.
//
// Solved by conjugate gradients preconditioned with one multigrid V-cycle. Everything
// lives on full zero-padded float planes (stride w + 2) rather than on a list of the
// removed pixels: the passes are then plain stencils the compiler vectorises, and
// known pixels are rows of zeros. Coarse levels aggregate 2x2 blocks (their operator is
// P^T A P for piecewise-constant P, again a 9-point stencil) down to 64 points, solved by
// Cholesky; one Jacobi sweep before and after each coarse correction smooths. At 224x224
// this takes 8-14 iterations where SSOR-preconditioned CG took 20-90, each a few
// vectorised passes instead of sequential sweeps.
constexpr int kDy[8] = {-1, -1, -1, 0, 0, 1, 1, 1}, kDx[8] = {-1, 0, 1, -1, 1, -1, 0, 1};
constexpr double kWeight[8] = {1.0 / 12, 1.0 / 6, 1.0 / 12, 1.0 / 6, 1.0 / 6, 1.0 / 12, 1.0 / 6, 1.0 / 12};
constexpr float kCorner = 1.f / 12, kEdge = 1.f / 6;
// Measured on 224x224 and 96x96 removed sets (smooth, noisy and CAM-shaped saliency):
// the aggregated coarse correction undershoots, scaling it by 1.5 saves a third of the
// iterations; Jacobi weights 1 (fine) and 0.9 (coarse) smooth best.
constexpr float kCoarseScale = 1.5f, kOmegaFine = 1.f, kOmegaCoarse = 0.9f;
constexpr int64_t kCoarsest = 64;

struct Level {
  int64_t h = 0, w = 0, S = 0;  // S: padded row stride
  int64_t y0 = 0, y1 = 0;       // rows holding unknowns: [y0, y1)
  std::vector<float> act;       // 1 at unknowns, else 0
  std::vector<int64_t> xa, xb;  // per row y0..y1: the unknowns lie in columns [xa, xb)
  std::vector<float> diag, inv_diag, off[8];  // coarse levels: the stencil (off[k]: to neighbour k)
  Level(int64_t hh, int64_t ww) : h(hh), w(ww), S(ww + 2), act(size(), 0.f), xa(hh), xb(hh) {}
  int64_t size() const { return (h + 2) * S; }
  int64_t at(int64_t y, int64_t x) const { return (y + 1) * S + x + 1; }
  // Padded rows a pass may touch: the unknowns' rows and one halo row either side.
  int64_t first() const { return y0 * S; }
  int64_t touched() const { return (y1 - y0 + 2) * S; }
  // Passes run over each row's span of unknowns only: outside it every vector stays at the
  // zero its solve cleared it to. A saliency order removes blobs, so the spans cover about
  // 3/4 of the unknowns' rows at 10%-90% removed (Grad-CAM maps, 96 and 224 pixels).
  void set_spans() {
    for (int64_t y = y0; y < y1; ++y) {
      const float* a = act.data() + at(y, 0);
      int64_t l = 0, r = w;
      while (l < w && a[l] == 0.f) ++l;
      while (r > l && a[r - 1] == 0.f) --r;
      xa[y] = l, xb[y] = r;
    }
  }
};

// out = A e on the unknowns' rows for `channels` planes P apart (fine level: constant
// weights, masked to the unknowns; e is zero at known pixels and in the padding). Rows
// outermost: a row's coefficients stay in L1 cache for every channel.
void apply_fine(const Level& L, const float* deg, const float* e, float* out, int channels) {
  const int64_t S = L.S, P = L.size();
  for (int64_t y = L.y0; y < L.y1; ++y)
    for (int c = 0; c < channels; ++c) {
      const int64_t b = L.at(y, 0);
      const float* __restrict up = e + c * P + b - S;
      const float* __restrict mid = e + c * P + b;
      const float* __restrict dn = e + c * P + b + S;
      const float* __restrict u = L.act.data() + b;
      const float* __restrict dg = deg + b;
      float* __restrict o = out + c * P + b;
      for (int64_t x = L.xa[y]; x < L.xb[y]; ++x)
        o[x] = u[x] * (dg[x] * mid[x] - kEdge * (up[x] + dn[x] + mid[x - 1] + mid[x + 1]) -
                       kCorner * (up[x - 1] + up[x + 1] + dn[x - 1] + dn[x + 1]));
    }
}

void apply_coarse(const Level& L, const float* e, float* out, int channels) {
  const int64_t S = L.S, P = L.size();
  for (int64_t y = L.y0; y < L.y1; ++y)
    for (int c = 0; c < channels; ++c) {
      const int64_t b = L.at(y, 0);
      const float* __restrict up = e + c * P + b - S;
      const float* __restrict mid = e + c * P + b;
      const float* __restrict dn = e + c * P + b + S;
      const float* __restrict d = L.diag.data() + b;
      const float* __restrict o0 = L.off[0].data() + b;
      const float* __restrict o1 = L.off[1].data() + b;
      const float* __restrict o2 = L.off[2].data() + b;
      const float* __restrict o3 = L.off[3].data() + b;
      const float* __restrict o4 = L.off[4].data() + b;
      const float* __restrict o5 = L.off[5].data() + b;
      const float* __restrict o6 = L.off[6].data() + b;
      const float* __restrict o7 = L.off[7].data() + b;
      float* __restrict o = out + c * P + b;
      for (int64_t x = L.xa[y]; x < L.xb[y]; ++x)
        o[x] = d[x] * mid[x] + o0[x] * up[x - 1] + o1[x] * up[x] + o2[x] * up[x + 1] + o3[x] * mid[x - 1] +
               o4[x] * mid[x + 1] + o5[x] * dn[x - 1] + o6[x] * dn[x] + o7[x] * dn[x + 1];
    }
}

// One solver per thread: its planes are sized once for the image and reused for every
// removed set, each solve clearing only the rows it touches.
template <int C>
class Imputer {
 public:
  Imputer(int64_t h, int64_t w) : h_(h), w_(w) {
    levels_.emplace_back(h, w);
    while (levels_.back().h * levels_.back().w > kCoarsest) {
      const Level& f = levels_.back();
      levels_.emplace_back((f.h + 1) / 2, (f.w + 1) / 2);
      Level& c = levels_.back();
      c.diag.resize(c.size()), c.inv_diag.resize(c.size());
      for (auto& o : c.off) o.resize(c.size());
    }
    const Level& f = levels_[0];
    deg_.assign(f.size(), 0.f), inv_deg_.assign(f.size(), 0.f);
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        double d = 0;
        for (int k = 0; k < 8; ++k)
          if (y + kDy[k] >= 0 && y + kDy[k] < h && x + kDx[k] >= 0 && x + kDx[k] < w) d += kWeight[k];
        deg_[f.at(y, x)] = static_cast<float>(d), inv_deg_[f.at(y, x)] = static_cast<float>(1 / d);
      }
    for (const Level& l : levels_) vr_.emplace_back(l.size() * C), ve_.emplace_back(l.size() * C), vt_.emplace_back(l.size() * C);
    for (auto* v : {&known_, &b_, &x_, &p_, &ap_}) v->resize(f.size() * C);
  }

  // image, out: C planes of h*w values; writes the removed pixels of out.
  void solve(const bool* removed, const float* image, float* out) {
    Level& f = levels_[0];
    f.y0 = h_, f.y1 = 0;
    for (int64_t y = 0; y < h_; ++y)
      if (std::find(removed + y * w_, removed + (y + 1) * w_, true) != removed + (y + 1) * w_)
        f.y0 = std::min(f.y0, y), f.y1 = y + 1;
    if (f.y1 <= f.y0) return;
    const int64_t P = f.size(), plane = h_ * w_;
    // The previous solve may have left values anywhere: clear what this one touches.
    std::fill(f.act.begin() + f.first(), f.act.begin() + f.first() + f.touched(), 0.f);
    for (int64_t y = f.y0; y < f.y1; ++y)
      for (int64_t x = 0; x < w_; ++x) f.act[f.at(y, x)] = removed[y * w_ + x] ? 1.f : 0.f;
    f.set_spans();
    build_coarse_levels();
    for (size_t l = 0; l < levels_.size(); ++l)
      for (auto* v : {&vr_[l], &ve_[l], &vt_[l]}) clear(levels_[l], *v);
    for (auto* v : {&b_, &x_, &p_, &ap_}) clear(f, *v);
    // Right-hand side: the known neighbours' weighted sum, the same stencil over the image
    // with the unknowns zeroed (known_ is fully written, halo included). Each channel is
    // solved at unit scale (the system is linear): float sums of squares neither overflow
    // nor underflow whatever the image's magnitude.
    float scale[C];
    for (int c = 0; c < C; ++c) {
      float* kn = known_.data() + c * P;
      const float* im = image + c * plane;
      float peak = 0;
      for (int64_t i = 0; i < plane; ++i) peak = std::max(peak, std::abs(im[i]));
      scale[c] = peak > 0 ? peak : 1.f;
      const float inv = 1.f / scale[c];
      for (int64_t y = 0; y < h_; ++y)
        for (int64_t x = 0; x < w_; ++x)
          kn[f.at(y, x)] = removed[y * w_ + x] ? 0.f : im[y * w_ + x] * inv;
      for (int64_t y = f.y0; y < f.y1; ++y) {
        const int64_t at = f.at(y, 0);
        const float* __restrict up = kn + at - f.S;
        const float* __restrict mid = kn + at;
        const float* __restrict dn = kn + at + f.S;
        const float* __restrict u = f.act.data() + at;
        float* __restrict o = b_.data() + c * P + at;
        for (int64_t x = f.xa[y]; x < f.xb[y]; ++x)
          o[x] = u[x] * (kEdge * (up[x] + dn[x] + mid[x - 1] + mid[x + 1]) +
                         kCorner * (up[x - 1] + up[x + 1] + dn[x - 1] + dn[x + 1]));
      }
    }
    conjugate_gradients();
    for (int c = 0; c < C; ++c)
      for (int64_t y = f.y0; y < f.y1; ++y)
        for (int64_t x = 0; x < w_; ++x)
          if (removed[y * w_ + x]) out[c * plane + y * w_ + x] = x_[c * P + f.at(y, x)] * scale[c];
  }

 private:
  void clear(const Level& l, std::vector<float>& v) {
    for (int c = 0; c < C; ++c)
      std::fill(v.begin() + c * l.size() + l.first(), v.begin() + c * l.size() + l.first() + l.touched(), 0.f);
  }

  // Level l + 1's stencil from level l's: a 2x2 block sums its members' couplings.
  void build_coarse_levels() {
    for (size_t l = 0; l + 1 < levels_.size(); ++l) {
      const Level& f = levels_[l];
      Level& c = levels_[l + 1];
      c.y0 = f.y0 / 2, c.y1 = (f.y1 + 1) / 2;
      for (auto* v : {&c.act, &c.diag, &c.inv_diag, &c.off[0], &c.off[1], &c.off[2], &c.off[3], &c.off[4], &c.off[5],
                      &c.off[6], &c.off[7]})
        std::fill(v->begin() + c.first(), v->begin() + c.first() + c.touched(), 0.f);
      int64_t d[8];
      for (int k = 0; k < 8; ++k) d[k] = kDy[k] * f.S + kDx[k];
      for (int64_t y = f.y0; y < f.y1; ++y)
        for (int64_t x = 0; x < f.w; ++x) {
          const int64_t i = f.at(y, x);
          if (f.act[i] == 0.f) continue;
          const int64_t I = c.at(y / 2, x / 2);
          c.diag[I] += l == 0 ? deg_[i] : f.diag[i];
          for (int k = 0; k < 8; ++k) {
            const float a = l == 0 ? -static_cast<float>(kWeight[k]) * f.act[i + d[k]] : f.off[k][i];
            if (a == 0.f) continue;
            // Floor division: a neighbour in the padding (-1) belongs to no block, but its
            // coupling is zero and never reaches here.
            const int64_t dy = ((y + kDy[k]) >> 1) - (y >> 1), dx = ((x + kDx[k]) >> 1) - (x >> 1);
            if (dy == 0 && dx == 0) {
              c.diag[I] += a;
            } else {
              const int q = static_cast<int>((dy + 1) * 3 + dx + 1);
              c.off[q < 4 ? q : q - 1][I] += a;
            }
          }
        }
      for (int64_t i = c.first(); i < c.first() + c.touched(); ++i)
        if (c.diag[i] > 0) c.act[i] = 1.f, c.inv_diag[i] = 1.f / c.diag[i];
      c.set_spans();
    }
    factor_coarsest();
  }

  // Dense Cholesky of the coarsest level's stencil over its unknowns (at most 64).
  void factor_coarsest() {
    const size_t last = levels_.size() - 1;
    const Level& L = levels_[last];
    coarse_pt_.clear();
    std::vector<int64_t> index(L.size(), -1);
    for (int64_t y = L.y0; y < L.y1; ++y)
      for (int64_t x = 0; x < L.w; ++x)
        if (L.act[L.at(y, x)] != 0.f) index[L.at(y, x)] = static_cast<int64_t>(coarse_pt_.size()), coarse_pt_.push_back(L.at(y, x));
    const int64_t n = static_cast<int64_t>(coarse_pt_.size());
    chol_.assign(n * n, 0.0);
    for (int64_t r = 0; r < n; ++r) {
      const int64_t i = coarse_pt_[r];
      chol_[r * n + r] = last == 0 ? deg_[i] : L.diag[i];
      for (int k = 0; k < 8; ++k) {
        const int64_t j = i + kDy[k] * L.S + kDx[k];
        if (index[j] >= 0) chol_[r * n + index[j]] += last == 0 ? -kWeight[k] : L.off[k][i];
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      double d = chol_[j * n + j];
      for (int64_t k = 0; k < j; ++k) d -= chol_[j * n + k] * chol_[j * n + k];
      d = std::sqrt(std::max(d, 1e-300));  // positive definite: the guard is for rounding only
      chol_[j * n + j] = d;
      for (int64_t i = j + 1; i < n; ++i) {
        double v = chol_[i * n + j];
        for (int64_t k = 0; k < j; ++k) v -= chol_[i * n + k] * chol_[j * n + k];
        chol_[i * n + j] = v / d;
      }
    }
  }

  void apply(size_t l, const float* e, float* out) const {
    l == 0 ? apply_fine(levels_[0], deg_.data(), e, out, C) : apply_coarse(levels_[l], e, out, C);
  }

  // e = V-cycle(r) on level l, for each channel: Jacobi, restrict the residual, recurse,
  // add the scaled coarse correction, Jacobi. Symmetric, as CG needs.
  void vcycle(size_t l) {
    const Level& L = levels_[l];
    const int64_t P = L.size();
    float* r = vr_[l].data();
    float* e = ve_[l].data();
    float* t = vt_[l].data();
    if (l + 1 == levels_.size()) {
      const int64_t n = static_cast<int64_t>(coarse_pt_.size());
      std::vector<double> z(n);
      for (int c = 0; c < C; ++c) {
        for (int64_t i = 0; i < n; ++i) {
          double v = r[c * P + coarse_pt_[i]];
          for (int64_t k = 0; k < i; ++k) v -= chol_[i * n + k] * z[k];
          z[i] = v / chol_[i * n + i];
        }
        for (int64_t i = n; i-- > 0;) {
          double v = z[i];
          for (int64_t k = i + 1; k < n; ++k) v -= chol_[k * n + i] * z[k];
          z[i] = v / chol_[i * n + i];
        }
        for (int64_t i = 0; i < n; ++i) e[c * P + coarse_pt_[i]] = static_cast<float>(z[i]);
      }
      return;
    }
    const float omega = l == 0 ? kOmegaFine : kOmegaCoarse;
    const float* inv = l == 0 ? inv_deg_.data() : L.inv_diag.data();
    const Level& Lc = levels_[l + 1];
    const int64_t Pc = Lc.size();
    for (int64_t y = L.y0; y < L.y1; ++y)
      for (int c = 0; c < C; ++c) {
        const int64_t b = L.at(y, 0);
        float* __restrict ec = e + c * P + b;
        const float* __restrict rc = r + c * P + b;
        const float* __restrict iv = inv + b;
        for (int64_t x = L.xa[y]; x < L.xb[y]; ++x) ec[x] = omega * iv[x] * rc[x];
      }
    apply(l, e, t);
    // Restriction sums each 2x2 block's residual; a block's second row or column may be
    // the zero padding or a halo row, both zero.
    for (int64_t Y = Lc.y0; Y < Lc.y1; ++Y)
      for (int c = 0; c < C; ++c) {
        const int64_t b0 = c * P + L.at(2 * Y, 0), b1 = c * P + L.at(2 * Y + 1, 0);
        float* __restrict rcoarse = vr_[l + 1].data() + c * Pc + Lc.at(Y, 0);
        for (int64_t X = Lc.xa[Y]; X < Lc.xb[Y]; ++X) {
          const int64_t x = 2 * X;
          rcoarse[X] = (r[b0 + x] - t[b0 + x]) + (r[b0 + x + 1] - t[b0 + x + 1]) + (r[b1 + x] - t[b1 + x]) +
                       (r[b1 + x + 1] - t[b1 + x + 1]);
        }
      }
    vcycle(l + 1);
    for (int64_t y = L.y0; y < L.y1; ++y)
      for (int c = 0; c < C; ++c) {
        const int64_t b = L.at(y, 0);
        const float* __restrict crow = ve_[l + 1].data() + c * Pc + Lc.at(y / 2, 0);
        const float* __restrict a = L.act.data() + b;
        float* __restrict er = e + c * P + b;
        // 2X + 1 may be the padding column: its act is 0 and it stays 0.
        for (int64_t X = Lc.xa[y / 2]; X < Lc.xb[y / 2]; ++X) {
          const float v = kCoarseScale * crow[X];
          er[2 * X] += a[2 * X] * v, er[2 * X + 1] += a[2 * X + 1] * v;
        }
      }
    apply(l, e, t);
    for (int64_t y = L.y0; y < L.y1; ++y)
      for (int c = 0; c < C; ++c) {
        const int64_t b = L.at(y, 0);
        float* __restrict ec = e + c * P + b;
        const float* __restrict rc = r + c * P + b;
        const float* __restrict tc = t + c * P + b;
        const float* __restrict iv = inv + b;
        for (int64_t x = L.xa[y]; x < L.xb[y]; ++x) ec[x] += omega * iv[x] * (rc[x] - tc[x]);
      }
  }

  // Calls f(start, n) with each row's span of unknowns in channel c's plane.
  template <typename F>
  void rows(int c, F&& f) const {
    const Level& L = levels_[0];
    for (int64_t y = L.y0; y < L.y1; ++y) f(c * L.size() + L.at(y, L.xa[y]), L.xb[y] - L.xa[y]);
  }

  // Per-row sums in 16 independent lanes so the compiler vectorises them; the rows add up
  // in double.
  double dot(const std::vector<float>& a, const std::vector<float>& e, int c) const {
    double s = 0;
    rows(c, [&](int64_t b, int64_t n) {
      const float* pa = a.data() + b;
      const float* pe = e.data() + b;
      float acc[16] = {};
      int64_t x = 0;
      for (; x + 16 <= n; x += 16)
        for (int j = 0; j < 16; ++j) acc[j] += pa[x + j] * pe[x + j];
      for (; x < n; ++x) acc[0] += pa[x] * pe[x];
      float row = 0;
      for (float v : acc) row += v;
      s += row;
    });
    return s;
  }

  // Each channel runs its own iteration (step sizes, stopping test); they share the
  // passes. Relative residual 1e-5: errors about 1e-4 at 224x224, far below the imputer's
  // noise (0.01).
  void conjugate_gradients() {
    std::vector<float>& res = vr_[0];  // the residual is the V-cycle's right-hand side as it stands
    auto precondition = [&] {
      vcycle(0);
      return ve_[0].data();
    };
    double bb[C], rz[C], rr[C], alpha[C], beta[C];
    bool active[C];
    std::copy(b_.begin(), b_.end(), res.begin());
    const float* z = precondition();
    for (int c = 0; c < C; ++c) {
      rows(c, [&](int64_t b, int64_t n) { std::copy(z + b, z + b + n, p_.data() + b); });
      bb[c] = dot(b_, b_, c), rz[c] = dot(res, ve_[0], c), rr[c] = bb[c];
      active[c] = bb[c] > 0 && rr[c] > 1e-10 * bb[c];
    }
    const int64_t max_iterations = 10 * (h_ + w_) + 100;
    for (int64_t it = 0; it < max_iterations && std::any_of(active, active + C, [](bool a) { return a; }); ++it) {
      apply(0, p_.data(), ap_.data());
      for (int c = 0; c < C; ++c) {
        const double pap = dot(p_, ap_, c);
        if (active[c] && pap <= 0) active[c] = false;
        alpha[c] = active[c] ? rz[c] / pap : 0.0;  // a finished channel stays where it is
        const float a = static_cast<float>(alpha[c]);
        rows(c, [&](int64_t b, int64_t n) {
          float* __restrict x = x_.data() + b;
          float* __restrict r = res.data() + b;
          const float* __restrict p = p_.data() + b;
          const float* __restrict ap = ap_.data() + b;
          for (int64_t i = 0; i < n; ++i) x[i] += a * p[i], r[i] -= a * ap[i];
        });
      }
      z = precondition();
      for (int c = 0; c < C; ++c) {
        const double rz_new = dot(res, ve_[0], c);
        beta[c] = active[c] ? rz_new / rz[c] : 0.0;
        if (active[c]) rz[c] = rz_new;
        const float bt = static_cast<float>(beta[c]);
        rows(c, [&](int64_t b, int64_t n) {
          float* __restrict p = p_.data() + b;
          const float* __restrict zz = z + b;
          for (int64_t i = 0; i < n; ++i) p[i] = zz[i] + bt * p[i];
        });
        rr[c] = dot(res, res, c);
        active[c] = active[c] && rr[c] > 1e-10 * bb[c];
      }
    }
  }

  int64_t h_, w_;
  std::vector<Level> levels_;
  std::vector<float> deg_, inv_deg_;
  std::vector<std::vector<float>> vr_, ve_, vt_;  // per level: right-hand side, correction, scratch
  std::vector<float> known_, b_, x_, p_, ap_;
  std::vector<int64_t> coarse_pt_;
  std::vector<double> chol_;
};

// Imputes rows x [B,C,H,W] at removed [B,H,W] (bool), adding noise [B,C,H,W] there.
at::Tensor impute(const at::Tensor& x, const at::Tensor& removed, const at::Tensor& noise) {
  // The solver is ours, on the CPU: rows from a GPU go there and come back.
  if (!x.device().is_cpu())
    return impute(x.to(at::kCPU), removed.to(at::kCPU), noise.to(at::kCPU)).to(x.device());
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  at::Tensor xs = x.to(at::kFloat).contiguous();
  at::Tensor filled = xs.clone();
  at::Tensor rm = removed.to(at::kBool).contiguous();
  const float* src = xs.data_ptr<float>();
  float* dst = filled.data_ptr<float>();
  const bool* rp = rm.data_ptr<bool>();
  // One system per row, shared by its channels. Rows differ in size many-fold (10% to 90%
  // removed), so threads take the next row as they free up, largest first, rather than
  // fixed halves of the range.
  std::vector<std::pair<int64_t, int64_t>> order;  // (removed pixels, row)
  for (int64_t r = 0; r < b; ++r)
    order.emplace_back(std::count(rp + r * h * w, rp + (r + 1) * h * w, true), r);
  std::sort(order.begin(), order.end(), std::greater<>());
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(b, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    if (c == 3) {
      Imputer<3> imputer(h, w);
      for (int64_t k = next++; k < b; k = next++) {
        const int64_t r = order[k].second;
        imputer.solve(rp + r * h * w, src + r * c * h * w, dst + r * c * h * w);
      }
    } else {
      Imputer<1> imputer(h, w);
      for (int64_t k = next++; k < b; k = next++) {
        const int64_t r = order[k].second;
        for (int64_t ch = 0; ch < c; ++ch)
          imputer.solve(rp + r * h * w, src + (r * c + ch) * h * w, dst + (r * c + ch) * h * w);
      }
    }
  });
  return at::where(removed.unsqueeze(1), filled + noise, xs);
}

}  // namespace

at::Tensor noisy_linear_imputation(const at::Tensor& x, const at::Tensor& removed, double noise, uint64_t seed) {
  at::Tensor xf = detail::checked_input(x, "noisy_linear_imputation");
  const int64_t n = xf.size(0), h = xf.size(2), w = xf.size(3);
  SALIENT_CHECK(removed.defined() && removed.dim() == 3 && removed.size(0) == n && removed.size(1) == h &&
                    removed.size(2) == w,
                "noisy_linear_imputation: the mask must be [N,H,W] like the input ", detail::shape_str(xf.sizes()), ", got ",
                removed.defined() ? detail::shape_str(removed.sizes()) : std::string("undefined"));
  SALIENT_CHECK(noise >= 0, "noisy_linear_imputation: noise must be >= 0, got ", noise);
  at::Tensor r = removed != 0;
  SALIENT_CHECK(!(r.flatten(1).all(1).any().item<bool>()), "noisy_linear_imputation: a sample has every pixel removed; "
                "nothing is left to impute from");
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor z = detail::seeded_randn(xf.sizes(), gen, xf) * noise;
  return impute(xf, r, z);
}

RoadResult road(const Model& model, const at::Tensor& x, const at::Tensor& map, const Target& target,
                const RoadOptions& o) {
  at::Tensor xf = detail::checked_input(model, x, "road");
  const int64_t n = xf.size(0), c = xf.size(1), h = xf.size(2), w = xf.size(3), hw = h * w;
  at::Tensor rank = detail::saliency_rank(map, xf, o.reduce(), "road");
  SALIENT_CHECK(!o.fractions().empty(), "road: fractions is empty");
  for (double f : o.fractions())
    SALIENT_CHECK(f > 0 && f < 1, "road: fractions must lie in (0, 1), got ", f);
  SALIENT_CHECK(o.noise() >= 0, "road: noise must be >= 0, got ", o.noise());
  SALIENT_CHECK(o.memory_budget() > 0, "road: memory_budget must be > 0");
  const auto inference = detail::inference("road", o.optimized(), o.precision());
  const int64_t k = static_cast<int64_t>(o.fractions().size()), per = 2 * k;
  std::vector<int64_t> counts;
  for (double f : o.fractions())
    counts.push_back(std::clamp<int64_t>(static_cast<int64_t>(std::llround(f * static_cast<double>(hw))), 1, hw - 1));
  // One noise draw per (order, fraction), shared by the samples: a sample's result does
  // not depend on the rest of its batch.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed());
  at::Tensor noise = detail::seeded_randn({per, c, h, w}, gen, xf) * o.noise();
  Attribution probe;
  const auto classes = detail::sample_classes(model, xf, target, inference, &probe);
  const int64_t rows = n * per;
  auto make_rows = [&](int64_t r0, int64_t r1) {
    std::vector<at::Tensor> masks;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t s = r / per, j = r % per, m = counts[j % k];
      masks.push_back(j < k ? rank[s] < m : rank[s] >= hw - m);  // MoRF: top m; LeRF: bottom m
    }
    at::Tensor idx = detail::row_range(r0, r1, xf);
    return impute(xf.index_select(0, idx.div(per, "floor")), at::stack(masks).view({r1 - r0, h, w}),
                  noise.index_select(0, idx.remainder(per)));
  };
  at::Tensor scores =
      detail::batched_scores(model, rows, forward_chunk_rows(model, xf, o.memory_budget()),
                             detail::input_rows(model, make_rows, inference), [&](int64_t r) { return r / per; },
                             classes, target, o.score())
          .view({n, 2, k});
  RoadResult res;
  res.fraction = at::tensor(o.fractions(), at::kDouble).to(xf.device(), at::kFloat);
  res.morf = scores.select(1, 0).contiguous();
  res.lerf = scores.select(1, 1).contiguous();
  res.morf_mean = res.morf.mean(1);
  res.lerf_mean = res.lerf.mean(1);
  res.combined = (res.lerf_mean - res.morf_mean) / 2;
  res.targets = detail::classes_tensor(classes, n, xf);
  res.forward_samples = probe.forward_samples + rows;
  return res;
}

}  // namespace salient
