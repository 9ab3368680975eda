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
// known pixels are rows of zeros. Coarse point Y lies on fine point 2Y; corrections are
// interpolated bilinearly (restricted to the unknowns), residuals restricted by its
// transpose, and each coarse operator is the Galerkin product P^T A P, again a 9-point
// stencil, down to 64 points solved by Cholesky; one Jacobi sweep before and after each
// coarse correction smooths. That takes 4-6 iterations at 96x96 and 224x224, where the
// 2x2-block aggregation this replaced took 10-12 and SSOR 20-90.
constexpr int kDy[8] = {-1, -1, -1, 0, 0, 1, 1, 1}, kDx[8] = {-1, 0, 1, -1, 1, -1, 0, 1};
constexpr double kWeight[8] = {1.0 / 12, 1.0 / 6, 1.0 / 12, 1.0 / 6, 1.0 / 6, 1.0 / 12, 1.0 / 6, 1.0 / 12};
constexpr float kCorner = 1.f / 12, kEdge = 1.f / 6;
constexpr int64_t kCoarsest = 64;

// Bilinear interpolation weight of a coarse point at fine distance d (per axis).
constexpr float hat(int d) { return d == 0 ? 1.f : (d == 1 || d == -1) ? 0.5f : 0.f; }

// The Galerkin product P^T A P of two 9-point stencils under bilinear P is a 9-point
// stencil whose every entry is a fixed combination of the fine coefficients around 2I:
//   Ac(I, I + D) = sum over u (3x3 offsets), k (9 stencil entries)
//                  of hat(u) hat(u + d_k - 2D) A_k(2I + u).
// Ac is symmetric, so only the centre and the entries to neighbours 4-7 (the right one
// and the row below) are summed; each fine coefficient A_k(2I + u) is read once for all
// of them it feeds.
struct GalerkinSource {
  int k = 0, uy = 0, ux = 0;  // fine coefficient k (0-7 a neighbour as kDy/kDx, 8 the centre) at 2I + u
  int n = 0;
  int d[4] = {};  // the coarse entries it feeds (4-7 a neighbour, 8 the centre), with weights
  float coef[4] = {};
};

std::vector<GalerkinSource> galerkin_sources() {
  std::vector<GalerkinSource> out;
  auto dir = [](int dy, int dx) {
    if (dy == 0 && dx == 0) return 8;
    for (int k = 0; k < 8; ++k)
      if (kDy[k] == dy && kDx[k] == dx) return k;
    return -1;
  };
  for (int k = 0; k < 9; ++k) {
    const int ky = k < 8 ? kDy[k] : 0, kx = k < 8 ? kDx[k] : 0;
    for (int uy = -1; uy <= 1; ++uy)
      for (int ux = -1; ux <= 1; ++ux) {
        GalerkinSource g;
        g.k = k, g.uy = uy, g.ux = ux;
        for (int Dy = -1; Dy <= 1; ++Dy)
          for (int Dx = -1; Dx <= 1; ++Dx) {
            const int d = dir(Dy, Dx);
            const float c = hat(uy) * hat(ux) * hat(uy + ky - 2 * Dy) * hat(ux + kx - 2 * Dx);
            if (d >= 4 && c != 0.f) g.d[g.n] = d, g.coef[g.n] = c, ++g.n;
          }
        if (g.n > 0) out.push_back(g);
      }
  }
  return out;
}

struct Level {
  int64_t h = 0, w = 0, S = 0;  // S: padded row stride
  int64_t y0 = 0, y1 = 0;       // rows holding unknowns: [y0, y1)
  int64_t wy0 = 0, wy1 = 0;     // rows the last solve wrote act and the stencil to
  std::vector<float> act;       // 1 at unknowns, else 0
  std::vector<int64_t> xa, xb;  // per row y0..y1: the unknowns lie in columns [xa, xb)
  std::vector<float> diag, inv_diag, off[8];  // coarse levels: the stencil (off[k]: to neighbour k)
  Level(int64_t hh, int64_t ww) : h(hh), w(ww), S(ww + 2), act(size(), 0.f), xa(hh), xb(hh) {}
  // One zero row past the bottom padding: the coarse stencils' build reads the fine
  // coefficients up to two columns right of the last column (where they are zero).
  int64_t size() const { return (h + 3) * S; }
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

// o[x] = ae(x), or r[x] - ae(x), over [x0, x1). ivdep: without it GCC checks the stencil's
// pointers for overlap on every row, which on the short coarse rows cost as much as the
// stencil itself.
template <typename F>
inline void write_row(float* __restrict o, const float* __restrict r, int64_t x0, int64_t x1, const F& ae) {
  if (r) {
#pragma GCC ivdep
    for (int64_t x = x0; x < x1; ++x) o[x] = r[x] - ae(x);
  } else {
#pragma GCC ivdep
    for (int64_t x = x0; x < x1; ++x) o[x] = ae(x);
  }
}

// out = A e on the unknowns' rows for `channels` planes P apart (fine level: constant
// weights, masked to the unknowns; e is zero at known pixels and in the padding), or with
// r given the residual r - A e in the same pass. Rows outermost: a row's coefficients
// stay in L1 cache for every channel.
void apply_fine(const Level& L, const float* deg, const float* e, const float* r, float* out, int channels) {
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
      auto ae = [&](int64_t x) {
        return u[x] * (dg[x] * mid[x] - kEdge * (up[x] + dn[x] + mid[x - 1] + mid[x + 1]) -
                       kCorner * (up[x - 1] + up[x + 1] + dn[x - 1] + dn[x + 1]));
      };
      write_row(o, r ? r + c * P + b : nullptr, L.xa[y], L.xb[y], ae);
    }
}

void apply_coarse(const Level& L, const float* e, const float* r, float* out, int channels) {
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
      auto ae = [&](int64_t x) {
        return d[x] * mid[x] + o0[x] * up[x - 1] + o1[x] * up[x] + o2[x] * up[x + 1] + o3[x] * mid[x - 1] +
               o4[x] * mid[x + 1] + o5[x] * dn[x - 1] + o6[x] * dn[x] + o7[x] * dn[x + 1];
      };
      write_row(o, r ? r + c * P + b : nullptr, L.xa[y], L.xb[y], ae);
    }
}

// One solver per thread: its planes are sized once for the image and reused for every
// removed set, each solve clearing only the rows it touches.
template <int C>
class Imputer {
 public:
  Imputer(int64_t h, int64_t w) : h_(h), w_(w), sources_(galerkin_sources()) {
    levels_.emplace_back(h, w);
    // Coarse point Y sits on fine row 2Y: h/2 + 1 of them cover every fine row with two
    // coarse neighbours or one directly above it.
    while (levels_.back().h * levels_.back().w > kCoarsest) {
      const Level& f = levels_.back();
      levels_.emplace_back(f.h / 2 + 1, f.w / 2 + 1);
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
    row_.resize(levels_.size() > 1 ? levels_[1].S : 0);
  }

  // image, noise, out: C planes of h*w values; writes the removed pixels of out, the
  // solution plus the noise there.
  void solve(const bool* removed, const float* image, const float* noise, float* out) {
    Level& f = levels_[0];
    f.y0 = h_, f.y1 = 0;
    for (int64_t y = 0; y < h_; ++y)
      if (std::find(removed + y * w_, removed + (y + 1) * w_, true) != removed + (y + 1) * w_)
        f.y0 = std::min(f.y0, y), f.y1 = y + 1;
    if (f.y1 <= f.y0) return;
    const int64_t P = f.size(), plane = h_ * w_;
    // act is exact everywhere (the coarse stencils read it two rows beyond the unknowns):
    // clear what the previous solve wrote, then write this one's rows.
    std::fill(f.act.begin() + f.at(f.wy0, -1), f.act.begin() + f.at(f.wy1, -1), 0.f);
    for (int64_t y = f.y0; y < f.y1; ++y)
      for (int64_t x = 0; x < w_; ++x) f.act[f.at(y, x)] = removed[y * w_ + x] ? 1.f : 0.f;
    f.wy0 = f.y0, f.wy1 = f.y1;
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
      for (int64_t y = 0; y < h_; ++y) {
        const float* __restrict a = f.act.data() + f.at(y, 0);  // exact in every row
        const float* __restrict src = im + y * w_;
        float* __restrict dst = kn + f.at(y, 0);
        for (int64_t x = 0; x < w_; ++x) dst[x] = (1.f - a[x]) * src[x] * inv;
      }
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
      for (int64_t y = f.y0; y < f.y1; ++y) {
        const float* __restrict a = f.act.data() + f.at(y, 0);
        const float* __restrict src = x_.data() + c * P + f.at(y, 0);
        const float* __restrict nz = noise + c * plane + y * w_;
        float* __restrict dst = out + c * plane + y * w_;
        for (int64_t x = f.xa[y]; x < f.xb[y]; ++x) dst[x] = a[x] != 0.f ? src[x] * scale[c] + nz[x] : dst[x];
      }
  }

 private:
  void clear(const Level& l, std::vector<float>& v) {
    for (int c = 0; c < C; ++c)
      std::fill(v.begin() + c * l.size() + l.first(), v.begin() + c * l.size() + l.first() + l.touched(), 0.f);
  }

  // Level l + 1's stencil from level l's, the Galerkin product under bilinear
  // interpolation (restricted to the unknowns: known pixels take no correction).
  void build_coarse_levels() {
    for (size_t l = 0; l + 1 < levels_.size(); ++l) {
      const Level& f = levels_[l];
      Level& c = levels_[l + 1];
      c.y0 = f.y0 / 2, c.y1 = std::min(c.h, f.y1 / 2 + 1);
      // Every array is zero outside the rows this solve writes: the next level's build
      // reads rows beyond them.
      for (auto* v : {&c.act, &c.diag, &c.inv_diag, &c.off[0], &c.off[1], &c.off[2], &c.off[3], &c.off[4], &c.off[5],
                      &c.off[6], &c.off[7]})
        std::fill(v->begin() + c.at(c.wy0, -1), v->begin() + c.at(c.wy1, -1), 0.f);
      c.wy0 = c.y0, c.wy1 = c.y1;
      int64_t d[8];
      for (int k = 0; k < 8; ++k) d[k] = kDy[k] * f.S + kDx[k];
      for (int64_t Y = c.y0; Y < c.y1; ++Y) {
        // The coarse points whose interpolation reaches this row's fine unknowns.
        int64_t lo = c.w, hi = 0;
        for (int64_t y = std::max(f.y0, 2 * Y - 1); y < std::min(f.y1, 2 * Y + 2); ++y)
          if (f.xa[y] < f.xb[y]) lo = std::min(lo, f.xa[y] / 2), hi = std::max(hi, f.xb[y] / 2 + 1);
        hi = std::min(hi, c.w);
        if (lo >= hi) continue;
        float* __restrict v = row_.data();
        for (const GalerkinSource& g : sources_) {
          const int64_t y = 2 * Y + g.uy;
          if (y < f.y0 || y >= f.y1) continue;  // no unknowns: the fine coefficients are zero
          const int64_t b = f.at(y, g.ux);
          if (l == 0) {
            // The fine stencil, from act: A_k = -w_k act_i act_(i+d_k), A_centre = deg_i act_i.
            const float* __restrict a = f.act.data() + b;
            const float* __restrict an = g.k == 8 ? deg_.data() + b : a + d[g.k];
            const float wk = g.k == 8 ? 1.f : -static_cast<float>(kWeight[g.k]);
#pragma GCC ivdep
            for (int64_t X = lo; X < hi; ++X) v[X] = wk * a[2 * X] * an[2 * X];
          } else {
            const float* __restrict a = (g.k == 8 ? f.diag : f.off[g.k]).data() + b;
#pragma GCC ivdep
            for (int64_t X = lo; X < hi; ++X) v[X] = a[2 * X];
          }
          for (int j = 0; j < g.n; ++j) {
            float* __restrict dst = (g.d[j] == 8 ? c.diag : c.off[g.d[j]]).data() + c.at(Y, 0);
            const float cf = g.coef[j];
#pragma GCC ivdep
            for (int64_t X = lo; X < hi; ++X) dst[X] += cf * v[X];
          }
        }
      }
      // The other half by symmetry: the coupling to the left or upper neighbour J is J's
      // coupling to this point. Rows and columns beyond the written ones are zero.
      for (int64_t Y = c.y0; Y < c.y1; ++Y) {
        const int64_t b = c.at(Y, 0), u = c.at(Y - 1, 0);
        float* __restrict o0 = c.off[0].data() + b;
        float* __restrict o1 = c.off[1].data() + b;
        float* __restrict o2 = c.off[2].data() + b;
        float* __restrict o3 = c.off[3].data() + b;
        const float* __restrict o4 = c.off[4].data() + b;
        const float* __restrict o5 = c.off[5].data() + u;
        const float* __restrict o6 = c.off[6].data() + u;
        const float* __restrict o7 = c.off[7].data() + u;
#pragma GCC ivdep
        for (int64_t X = 0; X < c.w; ++X)
          o0[X] = o7[X - 1], o1[X] = o6[X], o2[X] = o5[X + 1], o3[X] = o4[X - 1];
      }
      for (int64_t i = c.at(c.y0, -1); i < c.at(c.y1, -1); ++i)
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
    // P^T A P is only semi-definite where coarse points share the few unknowns they reach
    // (an isolated unknown is interpolated from four): its right-hand sides lie in the
    // range of P^T, so a pivot that vanishes against its diagonal is skipped and that
    // component set to zero, which still solves the system.
    for (int64_t j = 0; j < n; ++j) {
      const double diag = chol_[j * n + j];
      double d = diag;
      for (int64_t k = 0; k < j; ++k) d -= chol_[j * n + k] * chol_[j * n + k];
      if (d <= 1e-9 * diag) {
        for (int64_t i = j; i < n; ++i) chol_[i * n + j] = 0;
        continue;
      }
      d = std::sqrt(d);
      chol_[j * n + j] = d;
      for (int64_t i = j + 1; i < n; ++i) {
        double v = chol_[i * n + j];
        for (int64_t k = 0; k < j; ++k) v -= chol_[i * n + k] * chol_[j * n + k];
        chol_[i * n + j] = v / d;
      }
    }
  }

  // out = A e, or with r given the residual r - A e.
  void apply(size_t l, const float* e, float* out, const float* r = nullptr) const {
    l == 0 ? apply_fine(levels_[0], deg_.data(), e, r, out, C) : apply_coarse(levels_[l], e, r, out, C);
  }

  // e = V-cycle(r) on level l, for each channel: Jacobi, restrict the residual, recurse,
  // add the interpolated coarse correction, Jacobi. Symmetric, as CG needs.
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
          z[i] = chol_[i * n + i] != 0 ? v / chol_[i * n + i] : 0.0;
        }
        // L^T z = y by columns of L^T, that is rows of L: each is read contiguously.
        for (int64_t i = n; i-- > 0;) {
          z[i] = chol_[i * n + i] != 0 ? z[i] / chol_[i * n + i] : 0.0;
          for (int64_t k = 0; k < i; ++k) z[k] -= chol_[i * n + k] * z[i];
        }
        for (int64_t i = 0; i < n; ++i) e[c * P + coarse_pt_[i]] = static_cast<float>(z[i]);
      }
      return;
    }
    const float* inv = l == 0 ? inv_deg_.data() : L.inv_diag.data();
    const Level& Lc = levels_[l + 1];
    const int64_t Pc = Lc.size();
    for (int64_t y = L.y0; y < L.y1; ++y)
      for (int c = 0; c < C; ++c) {
        const int64_t b = L.at(y, 0);
        float* __restrict ec = e + c * P + b;
        const float* __restrict rc = r + c * P + b;
        const float* __restrict iv = inv + b;
        for (int64_t x = L.xa[y]; x < L.xb[y]; ++x) ec[x] = iv[x] * rc[x];
      }
    apply(l, e, t, r);
    // Restriction, the transpose of the interpolation: each coarse point sums the residual
    // of the 3x3 fine points around it with weights 1, 1/2 and 1/4. Outside the spans and
    // in the padding the residual is zero.
    for (int64_t Y = Lc.y0; Y < Lc.y1; ++Y)
      for (int c = 0; c < C; ++c) {
        float* __restrict rcoarse = vr_[l + 1].data() + c * Pc + Lc.at(Y, 0);
        const int64_t X0 = Lc.xa[Y], X1 = Lc.xb[Y];
#pragma GCC ivdep
        for (int64_t X = X0; X < X1; ++X) rcoarse[X] = 0.f;
        for (int64_t y = std::max(L.y0, 2 * Y - 1); y < std::min(L.y1, 2 * Y + 2); ++y) {
          const float wy = y == 2 * Y ? 1.f : 0.5f;
          const float* __restrict tt = t + c * P + L.at(y, 0);
#pragma GCC ivdep
          for (int64_t X = X0; X < X1; ++X) {
            const int64_t x = 2 * X;
            rcoarse[X] += wy * (tt[x] + 0.5f * (tt[x - 1] + tt[x + 1]));
          }
        }
      }
    vcycle(l + 1);
    // Interpolation: fine row y takes coarse row y/2, or the mean of the two around it.
    for (int64_t y = L.y0; y < L.y1; ++y)
      for (int c = 0; c < C; ++c) {
        const int64_t b = L.at(y, 0);
        const float* __restrict c0 = ve_[l + 1].data() + c * Pc + Lc.at(y / 2, 0);
        const float* __restrict c1 = ve_[l + 1].data() + c * Pc + Lc.at((y + 1) / 2, 0);
        const float* __restrict a = L.act.data() + b;
        float* __restrict er = e + c * P + b;
        float* __restrict v = row_.data() + 1;
        const int64_t X0 = L.xa[y] / 2, X1 = (L.xb[y] + 1) / 2 + 1;  // X1 - 1: the last right neighbour
#pragma GCC ivdep
        for (int64_t X = X0; X < X1; ++X) v[X] = 0.5f * (c0[X] + c1[X]);
        // x = 2X and 2X + 1; the second of the last pair may lie past the span (act 0).
#pragma GCC ivdep
        for (int64_t X = X0; X + 1 < X1; ++X) {
          er[2 * X] += a[2 * X] * v[X];
          er[2 * X + 1] += a[2 * X + 1] * 0.5f * (v[X] + v[X + 1]);
        }
      }
    apply(l, e, t, r);
    for (int64_t y = L.y0; y < L.y1; ++y)
      for (int c = 0; c < C; ++c) {
        const int64_t b = L.at(y, 0);
        float* __restrict ec = e + c * P + b;
        const float* __restrict tc = t + c * P + b;
        const float* __restrict iv = inv + b;
        for (int64_t x = L.xa[y]; x < L.xb[y]; ++x) ec[x] += iv[x] * tc[x];
      }
  }

  // Calls f(start, n) with each row's span of unknowns in channel c's plane.
  template <typename F>
  void rows(int c, F&& f) const {
    const Level& L = levels_[0];
    for (int64_t y = L.y0; y < L.y1; ++y) f(c * L.size() + L.at(y, L.xa[y]), L.xb[y] - L.xa[y]);
  }

  // Per-row sums in 16 independent float lanes so the compiler vectorises them; the rows
  // add up in 16 double lanes, summed at the end.
  double dot(const std::vector<float>& a, const std::vector<float>& e, int c) const {
    double lanes[16] = {};
    rows(c, [&](int64_t b, int64_t n) {
      const float* pa = a.data() + b;
      const float* pe = e.data() + b;
      float acc[16] = {};
      int64_t x = 0;
      for (; x + 16 <= n; x += 16)
        for (int j = 0; j < 16; ++j) acc[j] += pa[x + j] * pe[x + j];
      for (; x < n; ++x) acc[0] += pa[x] * pe[x];
      for (int j = 0; j < 16; ++j) lanes[j] += acc[j];
    });
    double s = 0;
    for (double v : lanes) s += v;
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
#pragma GCC ivdep
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
#pragma GCC ivdep
          for (int64_t i = 0; i < n; ++i) p[i] = zz[i] + bt * p[i];
        });
        rr[c] = dot(res, res, c);
        active[c] = active[c] && rr[c] > 1e-10 * bb[c];
      }
    }
  }

  int64_t h_, w_;
  std::vector<GalerkinSource> sources_;
  std::vector<Level> levels_;
  std::vector<float> deg_, inv_deg_;
  std::vector<std::vector<float>> vr_, ve_, vt_;  // per level: right-hand side, correction, scratch
  std::vector<float> known_, b_, x_, p_, ap_;
  std::vector<float> row_;  // one coarse row: the vertical half of the interpolation
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
  at::Tensor nz = noise.to(at::kFloat).contiguous();
  const float* src = xs.data_ptr<float>();
  const float* np = nz.data_ptr<float>();
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
        imputer.solve(rp + r * h * w, src + r * c * h * w, np + r * c * h * w, dst + r * c * h * w);
      }
    } else {
      Imputer<1> imputer(h, w);
      for (int64_t k = next++; k < b; k = next++) {
        const int64_t r = order[k].second;
        for (int64_t ch = 0; ch < c; ++ch)
          imputer.solve(rp + r * h * w, src + (r * c + ch) * h * w, np + (r * c + ch) * h * w, dst + (r * c + ch) * h * w);
      }
    }
  });
  return filled;
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
