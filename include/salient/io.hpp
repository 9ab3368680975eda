#pragma once
// Reading images and tensors, preprocessing, writing results.
//
//   cv::Mat rgb = salient::io::read_image("cat.jpg");                   // 8-bit RGB
//   auto pre = salient::io::Preprocess::preset("imagenet");
//   salient::io::Prepared p = salient::io::prepare(rgb, pre, /*channels=*/3);
//   p.tensor   // [1, 3, 224, 224] float32, normalised       p.display  // 224x224 RGB
//   salient::io::write_npy("cat.vanilla.npy", attribution.map);
#include <ATen/core/Tensor.h>
#include <opencv2/core.hpp>

#include <string>
#include <vector>

namespace salient {
namespace io {

// Decodes a PNG or JPEG (gray, RGB or RGBA; 8 or 16 bit) into 8-bit RGB. Throws
// salient::Error naming the file when it is missing, empty, truncated or not an image.
cv::Mat read_image(const std::string& path);
// Writes an RGB (or gray) 8-bit image as PNG, atomically (temporary file, then rename).
void write_png(const std::string& path, const cv::Mat& rgb);

struct Preprocess {
  int resize_shorter = 0;           // resize so the shorter side has this length (0: no)
  int crop_h = 0, crop_w = 0;       // then center-crop (0: no)
  int size_h = 0, size_w = 0;       // or resize to exactly H x W (0: no)
  std::vector<float> mean{0.f};     // per channel (one value: all channels)
  std::vector<float> std{1.f};
  static Preprocess preset(const std::string& name);  // "imagenet" | "none"
  std::string describe() const;
};

struct Prepared {
  at::Tensor tensor;  // [1, C, H, W] float32, what the model sees
  cv::Mat display;    // the resized/cropped 8-bit RGB image, H x W, for overlays
};

// Resize/crop, scale to [0,1], normalise; `channels` 1 turns the image gray, 3 keeps RGB.
Prepared prepare(const cv::Mat& rgb, const Preprocess& pre, int channels);
// Undo the normalisation of one sample [C,H,W] for display (clipped to [0,1], 8-bit RGB).
cv::Mat tensor_to_image(const at::Tensor& chw, const Preprocess& pre);

// .npy (format 1.0/2.0, little-endian, C order). Reads float32/float64/int; returns float32
// (int64 for integer files). Writes float32.
at::Tensor read_npy(const std::string& path);
void write_npy(const std::string& path, const at::Tensor& t);

std::vector<std::string> read_labels(const std::string& path);

// Writes `data` to `path` atomically: a temporary file in the same directory, then rename.
void write_file_atomic(const std::string& path, const std::string& data);

}  // namespace io
}  // namespace salient
