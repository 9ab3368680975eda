#pragma once
// From raw maps to pictures: reduce channels, normalise, colour, overlay, panels.
// Methods never normalise; this is the only place that does.
//
//   cv::Mat m = salient::render::reduce(a.map[0], salient::render::Reduce::MaxAbs);  // H x W float
//   cv::Mat u = salient::render::normalize(m, salient::render::Normalize::Percentile);  // [0,1]
//   cv::Mat heat = salient::render::colorize(u, salient::render::Colormap::Jet);      // RGB
//   cv::Mat view = salient::render::overlay(image_rgb, heat, 0.5);
#include <ATen/core/Tensor.h>
#include <opencv2/core.hpp>

#include <string>
#include <vector>

namespace salient {
namespace render {

enum class Reduce { MaxAbs, AbsSum, Sum };
enum class Normalize { MinMax, Percentile };
enum class Colormap { Jet, Viridis, Inferno, Turbo };

Reduce reduce_from_string(const std::string& s);        // max-abs | abs-sum | sum
Colormap colormap_from_string(const std::string& s);    // jet | viridis | inferno | turbo
const char* to_string(Colormap c);

// One sample [C,H,W] (or [H,W]) to an H x W CV_32F map: max |.| over channels (Simonyan
// et al., tf-keras-vis), sum of |.|, or plain sum.
cv::Mat reduce(const at::Tensor& map, Reduce how);
// To [0,1]. MinMax: (m - min) / (max - min). Percentile: values clipped to
// [0, percentile(m)] then divided by it (for non-negative maps; negatives become 0).
// A constant map (or one whose clip value is 0) gives all zeros, never NaN.
cv::Mat normalize(const cv::Mat& m, Normalize how, double percentile = 99.5);
// [0,1] CV_32F to 8-bit RGB.
cv::Mat colorize(const cv::Mat& unit, Colormap cmap);
// image * (1 - alpha) + heat * alpha, both 8-bit RGB; the image is resized to the heat's size.
cv::Mat overlay(const cv::Mat& image_rgb, const cv::Mat& heat_rgb, double alpha = 0.5);

struct Cell {
  std::string title;
  cv::Mat image;  // 8-bit RGB
};
// The original beside its heatmaps, each scaled to `cell_size` px, titled; `caption` on top.
// per_row > 0 wraps the cells into rows of at most per_row (many methods at once).
cv::Mat panel(const std::vector<Cell>& cells, const std::string& caption, int cell_size = 224, int per_row = 0);
// pytorch-grad-cam's post-processing of raw CAMs [N,1,h,w] (or [N,h,w]) to [N,H,W] in
// [0,1], for comparison with its outputs: per image ReLU, min-max with eps 1e-7, bilinear
// resize (align_corners = false, as cv2.resize), ReLU, min-max again. Maps whose raw
// values are all <= 0 come out as zeros.
at::Tensor pytorch_grad_cam_scale(const at::Tensor& raw, int64_t height, int64_t width);

// A line plot (8-bit RGB): one line per series, axes with ticks, a legend. Series k has
// colour k % 10 and line style k / 10 (solid, dashed, dotted, dash-dot). The image is
// width x height unless the legend needs more room: long names widen it, many series
// make it taller.
struct Series {
  std::string name;
  std::vector<double> x, y;
};
cv::Mat plot(const std::vector<Series>& series, const std::string& title, const std::string& x_label,
             const std::string& y_label, int width = 720, int height = 440);

// Axis ticks as a person would place them: the multiples of 1, 2 or 5 x 10^k within
// [lo, hi], the step chosen so that about `target` of them fall there (whole numbers
// only when `integer`). plot() widens its y range out to such ticks.
double tick_step(double lo, double hi, int target = 5, bool integer = false);
std::vector<double> ticks(double lo, double hi, double step);

// Stacks panels vertically (padding widths), e.g. for a contact sheet.
cv::Mat stack_rows(const std::vector<cv::Mat>& rows);

}  // namespace render
}  // namespace salient
