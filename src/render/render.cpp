#include "salient/render.hpp"

#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>

#include "salient/error.hpp"

namespace salient {
namespace render {

Reduce reduce_from_string(const std::string& s) {
  if (s == "max-abs" || s == "maxabs") return Reduce::MaxAbs;
  if (s == "abs-sum" || s == "abssum") return Reduce::AbsSum;
  if (s == "sum") return Reduce::Sum;
  SALIENT_FAIL("unknown reduction '", s, "': use max-abs, abs-sum or sum");
}

Colormap colormap_from_string(const std::string& s) {
  if (s == "jet") return Colormap::Jet;
  if (s == "viridis") return Colormap::Viridis;
  if (s == "inferno") return Colormap::Inferno;
  if (s == "turbo") return Colormap::Turbo;
  SALIENT_FAIL("unknown colormap '", s, "': use jet, viridis, inferno or turbo");
}

const char* to_string(Colormap c) {
  switch (c) {
    case Colormap::Jet: return "jet";
    case Colormap::Viridis: return "viridis";
    case Colormap::Inferno: return "inferno";
    case Colormap::Turbo: return "turbo";
  }
  return "";
}

cv::Mat reduce(const at::Tensor& map, Reduce how) {
  at::Tensor t = map.detach().to(at::kCPU).to(at::kFloat);
  if (t.dim() == 2) t = t.unsqueeze(0);
  SALIENT_CHECK(t.dim() == 3, "render: expected one map [C, H, W] or [H, W]");
  at::Tensor r;
  switch (how) {
    case Reduce::MaxAbs: r = std::get<0>(t.abs().max(0)); break;
    case Reduce::AbsSum: r = t.abs().sum(0); break;
    case Reduce::Sum: r = t.sum(0); break;
  }
  r = r.contiguous();
  return cv::Mat(static_cast<int>(r.size(0)), static_cast<int>(r.size(1)), CV_32F, r.data_ptr()).clone();
}

cv::Mat normalize(const cv::Mat& m, Normalize how, double percentile) {
  SALIENT_CHECK(m.type() == CV_32F, "render: normalize expects a float map");
  SALIENT_CHECK(percentile > 0 && percentile <= 100, "render: percentile must be in (0, 100], got ",
                percentile);
  cv::Mat out;
  if (how == Normalize::MinMax) {
    double lo = 0, hi = 0;
    cv::minMaxLoc(m, &lo, &hi);
    if (!(hi > lo)) return cv::Mat::zeros(m.size(), CV_32F);
    m.convertTo(out, CV_32F, 1.0 / (hi - lo), -lo / (hi - lo));
    return out;
  }
  double lo = 0, hi = 0;
  cv::minMaxLoc(m, &lo, &hi);
  if (!(hi > lo)) return cv::Mat::zeros(m.size(), CV_32F);
  std::vector<float> v(m.begin<float>(), m.end<float>());
  size_t k = std::min(v.size() - 1, static_cast<size_t>(percentile / 100.0 * (v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  const double clip = v[k];
  if (!(clip > 0)) return cv::Mat::zeros(m.size(), CV_32F);
  cv::max(m, 0.0, out);
  cv::min(out, clip, out);
  out.convertTo(out, CV_32F, 1.0 / clip);
  return out;
}

cv::Mat colorize(const cv::Mat& unit, Colormap cmap) {
  cv::Mat u8, bgr, rgb;
  unit.convertTo(u8, CV_8U, 255.0);
  int code = cv::COLORMAP_JET;
  switch (cmap) {
    case Colormap::Jet: code = cv::COLORMAP_JET; break;
    case Colormap::Viridis: code = cv::COLORMAP_VIRIDIS; break;
    case Colormap::Inferno: code = cv::COLORMAP_INFERNO; break;
    case Colormap::Turbo: code = cv::COLORMAP_TURBO; break;
  }
  cv::applyColorMap(u8, bgr, code);
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

cv::Mat overlay(const cv::Mat& image_rgb, const cv::Mat& heat_rgb, double alpha) {
  SALIENT_CHECK(alpha >= 0 && alpha <= 1, "render: alpha must be in [0, 1], got ", alpha);
  cv::Mat img;
  cv::resize(image_rgb, img, heat_rgb.size(), 0, 0, cv::INTER_LINEAR);
  cv::Mat out;
  cv::addWeighted(img, 1.0 - alpha, heat_rgb, alpha, 0.0, out);
  return out;
}

namespace {

cv::Mat fit_cell(const cv::Mat& img, int size) {
  cv::Mat out;
  double scale = static_cast<double>(size) / std::max(img.cols, img.rows);
  // Whole-number enlargements stay crisp (each pixel a block); others are smoothed.
  int interp = scale >= 1.0 && std::abs(scale - std::round(scale)) < 1e-9 ? cv::INTER_NEAREST : cv::INTER_LINEAR;
  if (scale < 1.0) interp = cv::INTER_AREA;
  cv::resize(img, out, cv::Size(std::max(1, int(img.cols * scale + 0.5)), std::max(1, int(img.rows * scale + 0.5))),
             0, 0, interp);
  return out;
}

void put_text(cv::Mat& img, const std::string& text, int x, int y, double scale) {
  cv::putText(img, text, cv::Point(x, y), cv::FONT_HERSHEY_SIMPLEX, scale, cv::Scalar(20, 20, 20), 1,
              cv::LINE_AA);
}

int text_width(const std::string& text, double scale) {
  int baseline = 0;
  return cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, scale, 1, &baseline).width;
}

// The longest prefix of `text` that fits in `width` px with "..." after it.
std::string elide(const std::string& text, int width, double scale) {
  if (text_width(text, scale) <= width) return text;
  for (size_t n = text.size(); n-- > 0;) {
    std::string cut = text.substr(0, n) + "...";
    if (text_width(cut, scale) <= width) return cut;
  }
  return "";
}

// `text` as lines no wider than `width` px: broken first at the runs of three spaces that
// separate a caption's parts ("predicted: ...   target: ..."), then at single spaces; a
// word wider than a line on its own is elided. Every piece placed fits, so every line does.
std::vector<std::string> wrap(const std::string& text, int width, double scale) {
  std::vector<std::string> lines;
  std::string line;
  auto place = [&](const std::string& piece, const std::string& sep) {
    if (line.empty() || text_width(line + sep + piece, scale) <= width) {
      line += (line.empty() ? "" : sep) + piece;
    } else {
      lines.push_back(line);
      line = piece;
    }
  };
  const std::string kPartSep = "   ";
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(kPartSep, start);
    if (end == std::string::npos) end = text.size();
    const std::string part = text.substr(start, end - start);
    if (!part.empty() && text_width(part, scale) <= width) {
      place(part, kPartSep);
    } else if (!part.empty()) {
      std::istringstream words(part);
      std::string word, sep = kPartSep;
      while (words >> word) place(text_width(word, scale) <= width ? word : elide(word, width, scale), sep), sep = " ";
    }
    start = end + kPartSep.size();
  }
  if (!line.empty()) lines.push_back(line);
  return lines;
}

}  // namespace

cv::Mat panel(const std::vector<Cell>& cells, const std::string& caption, int cell_size, int per_row) {
  SALIENT_CHECK(!cells.empty(), "render: a panel needs at least one image");
  if (per_row > 0 && cells.size() > static_cast<size_t>(per_row)) {
    std::vector<cv::Mat> rows;
    for (size_t i = 0; i < cells.size(); i += per_row) {
      std::vector<Cell> part(cells.begin() + i, cells.begin() + std::min(cells.size(), i + per_row));
      rows.push_back(panel(part, i == 0 ? caption : "", cell_size));
    }
    return stack_rows(rows);
  }
  std::vector<cv::Mat> fitted;
  int cell_h = 0;
  for (const auto& c : cells) {
    fitted.push_back(fit_cell(c.image, cell_size));
    cell_h = std::max(cell_h, fitted.back().rows);
  }
  const int pad = 8, title_h = 24, line_h = 20;
  const int width = pad + static_cast<int>(cells.size()) * (cell_size + pad);
  const double text_scale = std::min(0.5, cell_size / 448.0 + 0.15);
  // Text stays inside the panel: a caption wider than it wraps onto more lines (the panel
  // grows), a title wider than its cell shrinks a little, then is cut with "...".
  const std::vector<std::string> lines = caption.empty() ? std::vector<std::string>{}
                                                          : wrap(caption, width - 2 * pad, text_scale + 0.05);
  const int caption_h = lines.empty() ? 0 : 28 + line_h * (static_cast<int>(lines.size()) - 1);
  const int height = caption_h + title_h + cell_h + pad;
  cv::Mat out(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  for (size_t l = 0; l < lines.size(); ++l)
    put_text(out, lines[l], pad, 28 - 9 + line_h * static_cast<int>(l), text_scale + 0.05);
  for (size_t i = 0; i < fitted.size(); ++i) {
    int x = pad + static_cast<int>(i) * (cell_size + pad);
    double scale = text_scale;
    const std::string& title = cells[i].title;
    if (text_width(title, scale) > cell_size) scale = std::max(0.3, scale * cell_size / text_width(title, scale));
    put_text(out, elide(title, cell_size, scale), x, caption_h + title_h - 8, scale);
    fitted[i].copyTo(out(cv::Rect(x, caption_h + title_h, fitted[i].cols, fitted[i].rows)));
  }
  return out;
}

at::Tensor pytorch_grad_cam_scale(const at::Tensor& raw, int64_t height, int64_t width) {
  at::Tensor cam = raw.detach().to(at::kFloat);
  if (cam.dim() == 4) cam = cam.squeeze(1);
  SALIENT_CHECK(cam.dim() == 3, "render: expected raw CAMs [N,1,h,w] or [N,h,w]");
  auto minmax = [](at::Tensor t) {  // per image
    at::Tensor flat = t.flatten(1);
    at::Tensor lo = std::get<0>(flat.min(1)).view({-1, 1, 1});
    t = t - lo;
    at::Tensor hi = std::get<0>(t.flatten(1).max(1)).view({-1, 1, 1});
    return t / (1e-7 + hi);
  };
  cam = minmax(at::relu(cam));
  cam = at::upsample_bilinear2d(cam.unsqueeze(1), {height, width}, /*align_corners=*/false).squeeze(1);
  return minmax(at::relu(cam));
}

cv::Mat stack_rows(const std::vector<cv::Mat>& rows) {
  SALIENT_CHECK(!rows.empty(), "render: nothing to stack");
  int width = 0, height = 0;
  for (const auto& r : rows) width = std::max(width, r.cols), height += r.rows;
  cv::Mat out(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  int y = 0;
  for (const auto& r : rows) {
    r.copyTo(out(cv::Rect(0, y, r.cols, r.rows)));
    y += r.rows;
  }
  return out;
}

namespace {

// Dash patterns in pixels (on, off, ...), empty for solid: series k gets colour k % 10 and
// style k / 10, so up to 40 series stay distinguishable.
const std::vector<double>& line_style(size_t k) {
  static const std::vector<double> styles[] = {{}, {9, 5}, {1, 6}, {10, 4, 1, 4}};
  return styles[(k / 10) % 4];
}

// Draws a polyline with the dash pattern carried along its length, so every segment
// shows (short segments included) and the dashes stay regular across vertices.
void styled_polyline(cv::Mat& out, const std::vector<cv::Point2d>& pts, const std::vector<double>& pattern,
                     const cv::Scalar& colour) {
  constexpr int kShift = 4;  // sub-pixel precision of cv::line
  auto fixed = [](cv::Point2d p) {
    return cv::Point(static_cast<int>(std::lround(p.x * (1 << kShift))),
                     static_cast<int>(std::lround(p.y * (1 << kShift))));
  };
  size_t element = 0;
  double left = pattern.empty() ? 0 : pattern[0];  // length left in the current element
  for (size_t i = 1; i < pts.size(); ++i) {
    const cv::Point2d a = pts[i - 1], b = pts[i];
    if (pattern.empty()) {
      cv::line(out, fixed(a), fixed(b), colour, 2, cv::LINE_AA, kShift);
      continue;
    }
    const double length = std::hypot(b.x - a.x, b.y - a.y);
    double t = 0;
    while (t < length) {
      const double step = std::min(left, length - t);
      if (element % 2 == 0 && step > 0)
        cv::line(out, fixed(a + (b - a) * (t / length)), fixed(a + (b - a) * ((t + step) / length)), colour, 2,
                 cv::LINE_AA, kShift);
      t += step, left -= step;
      if (left <= 1e-9) element = (element + 1) % pattern.size(), left = pattern[element];
    }
  }
}

}  // namespace

double tick_step(double lo, double hi, int target, bool integer) {
  SALIENT_CHECK(std::isfinite(lo) && std::isfinite(hi) && hi > lo && target > 0, "render: no ticks for [", lo, ", ",
                hi, "]");
  const double raw = (hi - lo) / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / magnitude;  // in [1, 10)
  double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * magnitude;
  return integer ? std::max(1.0, std::round(step)) : step;
}

std::vector<double> ticks(double lo, double hi, double step) {
  std::vector<double> out;
  const double eps = 1e-9 * step;
  for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + eps; k += 1) {
    double v = k * step;
    if (std::abs(v) < eps) v = 0;  // never "-0"
    out.push_back(v);
  }
  return out;
}

cv::Mat plot(const std::vector<Series>& series, const std::string& title, const std::string& x_label,
             const std::string& y_label, int width, int height) {
  SALIENT_CHECK(!series.empty(), "render: nothing to plot");
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  bool integer_x = true;  // e.g. step numbers: ticks then fall on whole steps
  for (const auto& s : series) {
    SALIENT_CHECK(s.x.size() == s.y.size(), "render: series '", s.name, "' has ", s.x.size(), " x and ", s.y.size(),
                  " y values");
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]), y0 = std::min(y0, s.y[i]), y1 = std::max(y1, s.y[i]);
      integer_x = integer_x && s.x[i] == std::round(s.x[i]);
    }
  }
  if (x0 > x1) x0 = 0, x1 = 1;
  if (y0 > y1) y0 = 0, y1 = 1;
  if (x1 - x0 < 1e-12) x1 = x0 + 1;
  if (y1 - y0 < 1e-12) y1 = y0 + 1;
  const double ypad = 0.03 * (y1 - y0);
  y0 -= ypad, y1 += ypad;
  // The y range ends on ticks; the x range stays the data's (curves span the width).
  const double ystep = tick_step(y0, y1, 5);
  y0 = std::floor(y0 / ystep + 1e-9) * ystep, y1 = std::ceil(y1 / ystep - 1e-9) * ystep;
  const double xstep = tick_step(x0, x1, 5, integer_x);
  // top leaves the title and, below it, the y label a row each, clear of the top tick's label.
  const int left = 64, top = 50, bottom = 48, legend_row = 16;
  const double legend_scale = 0.38;
  // The legend sets the right margin and, with many series, the height: names are never cut.
  int label_width = 0;
  for (const auto& s : series) {
    int baseline = 0;
    label_width = std::max(label_width,
                           cv::getTextSize(s.name, cv::FONT_HERSHEY_SIMPLEX, legend_scale, 1, &baseline).width);
  }
  const int right = std::max(190, 46 + label_width + 8);
  width = width - 190 + right;
  height = std::max(height, top + 8 + legend_row * static_cast<int>(series.size()) + 8);
  const int pw = width - left - right, ph = height - top - bottom;
  cv::Mat out(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  auto fx = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto fy = [&](double y) { return top + ph - (y - y0) / (y1 - y0) * ph; };
  auto px = [&](double x) { return static_cast<int>(std::lround(fx(x))); };
  auto py = [&](double y) { return static_cast<int>(std::lround(fy(y))); };
  const cv::Scalar axis(60, 60, 60), grid(225, 225, 225);
  char buf[32];
  for (double xv : ticks(x0, x1, xstep)) {
    cv::line(out, {px(xv), top}, {px(xv), top + ph}, grid, 1);
    std::snprintf(buf, sizeof(buf), "%.4g", xv);
    put_text(out, buf, px(xv) - 12, top + ph + 18, 0.4);
  }
  for (double yv : ticks(y0, y1, ystep)) {
    cv::line(out, {left, py(yv)}, {left + pw, py(yv)}, grid, 1);
    std::snprintf(buf, sizeof(buf), "%.4g", yv);
    put_text(out, buf, 6, py(yv) + 4, 0.4);
  }
  cv::rectangle(out, {left, top}, {left + pw, top + ph}, axis, 1);
  put_text(out, title, left, 22, 0.55);
  put_text(out, x_label, left + pw / 2 - 4 * static_cast<int>(x_label.size()), top + ph + bottom - 10, 0.45);
  put_text(out, y_label, 6, top - 14, 0.4);
  static const cv::Scalar colours[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40},
                                       {148, 103, 189}, {140, 86, 75},  {227, 119, 194}, {127, 127, 127},
                                       {188, 189, 34},  {23, 190, 207}};
  for (size_t k = 0; k < series.size(); ++k) {
    const cv::Scalar c = colours[k % 10];
    const auto& style = line_style(k);
    const auto& s = series[k];
    std::vector<cv::Point2d> run;  // finite points in a row; a non-finite one breaks the line
    auto flush = [&] {
      styled_polyline(out, run, style, c);
      run.clear();
    };
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i]))
        run.emplace_back(fx(s.x[i]), fy(s.y[i]));
      else
        flush();
    }
    flush();
    const int ly = top + 8 + legend_row * static_cast<int>(k);
    styled_polyline(out, {{left + pw + 10.0, double(ly)}, {left + pw + 38.0, double(ly)}}, style, c);
    put_text(out, s.name, left + pw + 46, ly + 4, legend_scale);
  }
  return out;
}

}  // namespace render
}  // namespace salient
