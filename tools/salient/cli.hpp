#pragma once
// Shared pieces of the salient subcommands.
#include <CLI/CLI.hpp>
#include <opencv2/core.hpp>

#include <map>
#include <string>
#include <vector>

#include "salient/salient.hpp"

namespace salient {
namespace cli {

// Sets up each subcommand's options on `app`; the returned function runs it.
using Runner = std::function<int()>;
Runner add_explain(CLI::App& app);
Runner add_layers(CLI::App& app);
Runner add_demo(CLI::App& app);

std::vector<std::string> split(const std::string& s, char sep);
std::vector<int64_t> parse_dims(const std::string& s, const char* flag);  // "3x224x224"
int64_t parse_int(const std::string& s, const char* flag);
std::vector<float> parse_floats(const std::string& s, const char* flag);
int64_t parse_bytes(const std::string& s, const char* flag);             // "1G", "512M", "1048576"

// Creates `dir` if needed and proves that it is writable (no files left behind).
void ensure_writable_dir(const std::string& dir);

// The three core methods, by CLI name.
extern const std::vector<std::string> kMethods;
bool is_cam_method(const std::string& name);

struct MethodSettings {
  salient::Score score = salient::Score::Logit;
  std::string layer;  // empty: automatic
  salient::SmoothGradOptions smoothgrad;
};
// Runs one method by name; `layer_auto` tells whether the layer was chosen automatically.
salient::Attribution run_method(const std::string& name, const salient::Model& model, const at::Tensor& x,
                                const salient::Target& target, const MethodSettings& settings);

struct RenderSettings {
  salient::render::Colormap colormap = salient::render::Colormap::Jet;
  salient::render::Reduce reduce = salient::render::Reduce::MaxAbs;
  double percentile = 99.5;
  double alpha = 0.5;
};
// The 2-D [0,1] view of one sample's map, and its overlay on the image.
cv::Mat unit_map(const at::Tensor& sample_map, bool cam, const RenderSettings& r);
cv::Mat overlay_map(const cv::Mat& image, const at::Tensor& sample_map, bool cam, const RenderSettings& r);

std::string label_of(const std::vector<std::string>& labels, int64_t k);

}  // namespace cli
}  // namespace salient
