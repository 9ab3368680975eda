#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "cli.hpp"

namespace fs = std::filesystem;

namespace salient {
namespace cli {

const std::vector<std::string> kMethods = {"vanilla", "smoothgrad", "gradcam"};

bool is_cam_method(const std::string& name) { return name == "gradcam"; }

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream is(s);
  while (std::getline(is, item, sep))
    if (!item.empty()) out.push_back(item);
  return out;
}

namespace {

// Parses all of `s` with `parse` (std::stoll, std::stod): false if any of it is left.
template <typename T, typename F>
bool parse_all(const std::string& s, F parse, T* out) {
  size_t used = 0;
  try {
    *out = parse(s, &used);
  } catch (const std::exception&) {
    return false;
  }
  return used > 0 && used == s.size();
}

long long to_ll(const std::string& s, size_t* used) { return std::stoll(s, used); }
double to_d(const std::string& s, size_t* used) { return std::stod(s, used); }

}  // namespace

int64_t parse_int(const std::string& s, const char* flag) {
  long long v = 0;
  SALIENT_CHECK(parse_all(s, to_ll, &v), flag, ": '", s, "' is not an integer");
  return v;
}

std::vector<int64_t> parse_dims(const std::string& s, const char* flag) {
  std::vector<int64_t> dims;
  for (const auto& part : split(s, 'x')) {
    long long v = 0;
    SALIENT_CHECK(parse_all(part, to_ll, &v) && v > 0, flag, ": '", s, "' is not a list of sizes like 3x224x224");
    dims.push_back(v);
  }
  SALIENT_CHECK(!dims.empty(), flag, ": '", s, "' is not a list of sizes like 3x224x224");
  return dims;
}

std::vector<float> parse_floats(const std::string& s, const char* flag) {
  std::vector<float> out;
  for (const auto& part : split(s, ',')) {
    double v = 0;
    SALIENT_CHECK(parse_all(part, to_d, &v), flag, ": '", part, "' is not a number");
    out.push_back(static_cast<float>(v));
  }
  SALIENT_CHECK(!out.empty(), flag, ": no values");
  return out;
}

int64_t parse_bytes(const std::string& s, const char* flag) {
  size_t digits = s.find_first_not_of("0123456789.eE+-");
  std::string number = s.substr(0, digits), unit = digits == std::string::npos ? "" : s.substr(digits);
  double v = 0;
  SALIENT_CHECK(parse_all(number, to_d, &v) && v > 0, flag, ": '", s, "' is not a size like 512M or 2G");
  double mult = 1;
  if (unit == "K" || unit == "KiB" || unit == "k") mult = 1024.0;
  else if (unit == "M" || unit == "MiB") mult = 1024.0 * 1024;
  else if (unit == "G" || unit == "GiB") mult = 1024.0 * 1024 * 1024;
  else SALIENT_CHECK(unit.empty() || unit == "B", flag, ": unknown unit '", unit, "' (use K, M or G)");
  return static_cast<int64_t>(v * mult);
}

void ensure_writable_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  SALIENT_CHECK(!ec && fs::is_directory(dir), "output directory '", dir, "' cannot be created",
                ec ? ": " + ec.message() : std::string());
  std::string probe = (fs::path(dir) / (".salient_write_test." + std::to_string(::getpid()))).string();
  {
    std::ofstream f(probe);
    SALIENT_CHECK(f.good() && (f << "x") && f.flush(), "output directory '", dir, "' is not writable");
  }
  fs::remove(probe, ec);
}

salient::Attribution run_method(const std::string& name, const salient::Model& model, const at::Tensor& x,
                                const salient::Target& target, const MethodSettings& s) {
  if (name == "vanilla") return salient::vanilla_gradient(model, x, target, salient::VanillaOptions().score(s.score));
  if (name == "smoothgrad") return salient::smoothgrad(model, x, target, salient::SmoothGradOptions(s.smoothgrad).score(s.score));
  if (name == "gradcam")
    return salient::gradcam(model, x, target, salient::GradCamOptions().layer(s.layer).score(s.score));
  SALIENT_FAIL("unknown method '", name, "'; available: vanilla, smoothgrad, gradcam");
}

cv::Mat unit_map(const at::Tensor& sample_map, bool cam, const RenderSettings& r) {
  using namespace salient::render;
  // CAM maps are non-negative and smooth: min-max. Gradients are heavy-tailed: clip at a
  // high percentile of their magnitude so a few pixels do not wash out the rest.
  if (cam) return normalize(reduce(sample_map, Reduce::Sum), Normalize::MinMax);
  return normalize(reduce(sample_map, r.reduce), Normalize::Percentile, r.percentile);
}

cv::Mat overlay_map(const cv::Mat& image, const at::Tensor& sample_map, bool cam, const RenderSettings& r) {
  cv::Mat heat = salient::render::colorize(unit_map(sample_map, cam, r), r.colormap);
  return salient::render::overlay(image, heat, r.alpha);
}

std::string label_of(const std::vector<std::string>& labels, int64_t k) {
  if (k >= 0 && k < static_cast<int64_t>(labels.size())) return labels[k];
  return "class " + std::to_string(k);
}

}  // namespace cli
}  // namespace salient
