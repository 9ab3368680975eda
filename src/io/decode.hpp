#pragma once
// Internal: PNG and JPEG decoding with libpng and libjpeg directly, so that every
// warning about corrupt data is an error (OpenCV's decoders print it to stderr and
// return half an image).
#include <opencv2/core.hpp>

#include <string>

namespace salient {
namespace io {
namespace detail {

bool is_png(const std::string& data);
bool is_jpeg(const std::string& data);
// 8-bit RGB; throws salient::Error naming `path` on any decoder error or warning.
cv::Mat decode_png(const std::string& data, const std::string& path);
cv::Mat decode_jpeg(const std::string& data, const std::string& path);

}  // namespace detail
}  // namespace io
}  // namespace salient
