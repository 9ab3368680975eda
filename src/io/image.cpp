#include <ATen/ATen.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "io/decode.hpp"
#include "salient/error.hpp"
#include "salient/io.hpp"

namespace fs = std::filesystem;

namespace salient {
namespace io {

namespace {

std::string read_bytes(const std::string& path, const char* what) {
  std::error_code ec;
  SALIENT_CHECK(fs::exists(path, ec), what, " '", path, "' not found");
  SALIENT_CHECK(fs::is_regular_file(path, ec), what, " '", path, "' is not a regular file");
  std::ifstream f(path, std::ios::binary);
  SALIENT_CHECK(f.good(), what, " '", path, "' is not readable");
  std::ostringstream ss;
  ss << f.rdbuf();
  std::string data = ss.str();
  SALIENT_CHECK(!data.empty(), what, " '", path, "' is empty");
  return data;
}

}  // namespace

cv::Mat read_image(const std::string& path) {
  std::string data = read_bytes(path, "image");
  cv::Mat rgb;
  if (detail::is_png(data))
    rgb = detail::decode_png(data, path);
  else if (detail::is_jpeg(data))
    rgb = detail::decode_jpeg(data, path);
  else
    SALIENT_FAIL("image '", path, "' is not a PNG or JPEG file");
  SALIENT_CHECK(rgb.rows > 0 && rgb.cols > 0, "image '", path, "' has no pixels");
  return rgb;
}

void write_file_atomic(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    SALIENT_CHECK(f.good(), "cannot write '", path, "': ", std::strerror(errno));
    f.write(data.data(), static_cast<std::streamsize>(data.size()));
    f.close();
    if (!f.good()) {
      std::remove(tmp.c_str());
      SALIENT_FAIL("cannot write '", path, "': write failed");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    SALIENT_FAIL("cannot write '", path, "': ", std::strerror(err));
  }
}

void write_png(const std::string& path, const cv::Mat& rgb) {
  cv::Mat bgr;
  if (rgb.channels() == 3)
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  else
    bgr = rgb;
  std::vector<uchar> buf;
  SALIENT_CHECK(cv::imencode(".png", bgr, buf), "cannot encode PNG for '", path, "'");
  write_file_atomic(path, std::string(buf.begin(), buf.end()));
}

Preprocess Preprocess::preset(const std::string& name) {
  Preprocess p;
  if (name == "imagenet") {
    p.resize_shorter = 256;
    p.crop_h = p.crop_w = 224;
    p.mean = {0.485f, 0.456f, 0.406f};
    p.std = {0.229f, 0.224f, 0.225f};
    return p;
  }
  if (name == "none") return p;
  SALIENT_FAIL("unknown preset '", name, "': use imagenet or none");
}

std::string Preprocess::describe() const {
  std::ostringstream os;
  if (size_h) os << "resize " << size_h << "x" << size_w << ", ";
  if (resize_shorter) os << "resize shorter side " << resize_shorter << ", ";
  if (crop_h) os << "center crop " << crop_h << "x" << crop_w << ", ";
  os << "scale to [0,1], mean";
  for (float m : mean) os << " " << m;
  os << ", std";
  for (float s : std) os << " " << s;
  return os.str();
}

namespace {

void resize_to(cv::Mat& img, int w, int h) {
  if (img.cols == w && img.rows == h) return;
  // Area averaging when shrinking (no aliasing), bilinear when growing.
  int interp = (w < img.cols || h < img.rows) ? cv::INTER_AREA : cv::INTER_LINEAR;
  cv::resize(img, img, cv::Size(w, h), 0, 0, interp);
}

std::vector<float> per_channel(const std::vector<float>& v, int channels, const char* what) {
  if (v.size() == 1) return std::vector<float>(channels, v[0]);
  SALIENT_CHECK(static_cast<int>(v.size()) == channels, what, " has ", v.size(),
                " values but the model takes ", channels, " channel(s)");
  return v;
}

}  // namespace

Prepared prepare(const cv::Mat& rgb, const Preprocess& pre, int channels) {
  SALIENT_CHECK(channels == 1 || channels == 3, "models with ", channels,
                " input channels cannot take images; pass a .npy tensor");
  SALIENT_CHECK(!rgb.empty(), "empty image");
  cv::Mat img = rgb.clone();
  if (pre.size_h > 0 && pre.size_w > 0) {
    resize_to(img, pre.size_w, pre.size_h);
  } else {
    if (pre.resize_shorter > 0) {
      // torchvision.transforms.Resize(int): shorter side = r, longer side truncated.
      int r = pre.resize_shorter;
      int w = img.cols <= img.rows ? r : static_cast<int>(static_cast<int64_t>(r) * img.cols / img.rows);
      int h = img.rows < img.cols ? r : static_cast<int>(static_cast<int64_t>(r) * img.rows / img.cols);
      resize_to(img, w, h);
    }
    if (pre.crop_h > 0 && pre.crop_w > 0) {
      SALIENT_CHECK(img.rows >= pre.crop_h && img.cols >= pre.crop_w, "image of ", img.cols, "x",
                    img.rows, " is smaller than the crop ", pre.crop_w, "x", pre.crop_h);
      int top = static_cast<int>(std::lround((img.rows - pre.crop_h) / 2.0));
      int left = static_cast<int>(std::lround((img.cols - pre.crop_w) / 2.0));
      img = img(cv::Rect(left, top, pre.crop_w, pre.crop_h)).clone();
    }
  }
  Prepared out;
  if (channels == 1) {
    cv::Mat gray;
    cv::cvtColor(img, gray, cv::COLOR_RGB2GRAY);
    cv::cvtColor(gray, out.display, cv::COLOR_GRAY2RGB);
    img = gray;
  } else {
    out.display = img;
  }
  auto mean = per_channel(pre.mean, channels, "--mean");
  auto stdv = per_channel(pre.std, channels, "--std");
  for (float s : stdv) SALIENT_CHECK(s > 0, "--std values must be > 0");
  cv::Mat f;
  img.convertTo(f, CV_32F, 1.0 / 255.0);
  at::Tensor t = at::from_blob(f.data, {f.rows, f.cols, channels}, at::kFloat).permute({2, 0, 1}).clone();
  at::Tensor m = at::tensor(mean).view({-1, 1, 1}), s = at::tensor(stdv).view({-1, 1, 1});
  out.tensor = ((t - m) / s).unsqueeze(0).contiguous();
  return out;
}

cv::Mat tensor_to_image(const at::Tensor& chw, const Preprocess& pre) {
  at::Tensor t = chw.detach().to(at::kCPU, at::kFloat);
  SALIENT_CHECK(t.dim() == 3, "expected one sample [C, H, W]");
  const int64_t c = t.size(0);
  if (c == 1 || c == 3) {
    auto mean = per_channel(pre.mean, static_cast<int>(c), "--mean");
    auto stdv = per_channel(pre.std, static_cast<int>(c), "--std");
    t = t * at::tensor(stdv).view({-1, 1, 1}) + at::tensor(mean).view({-1, 1, 1});
  } else {
    t = t.narrow(0, 0, 1);
    t = (t - t.min()) / (t.max() - t.min() + 1e-12);
  }
  t = (t.clamp(0, 1) * 255.0).round().to(at::kByte).permute({1, 2, 0}).contiguous();
  cv::Mat m(static_cast<int>(t.size(0)), static_cast<int>(t.size(1)), CV_8UC(static_cast<int>(t.size(2))),
            t.data_ptr());
  cv::Mat rgb;
  if (m.channels() == 1)
    cv::cvtColor(m, rgb, cv::COLOR_GRAY2RGB);
  else
    rgb = m.clone();
  return rgb;
}

std::vector<std::string> read_labels(const std::string& path) {
  std::string data = read_bytes(path, "labels file");
  std::vector<std::string> labels;
  std::istringstream is(data);
  std::string line;
  while (std::getline(is, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    labels.push_back(line);
  }
  while (!labels.empty() && labels.back().empty()) labels.pop_back();
  return labels;
}

}  // namespace io
}  // namespace salient
