#include "io/decode.hpp"

#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

#include <jpeglib.h>

#include "salient/error.hpp"

namespace salient {
namespace io {
namespace detail {

bool is_png(const std::string& data) { return data.size() >= 8 && std::memcmp(data.data(), "\x89PNG\r\n\x1a\n", 8) == 0; }
bool is_jpeg(const std::string& data) { return data.size() >= 3 && std::memcmp(data.data(), "\xff\xd8\xff", 3) == 0; }

namespace {

struct PngSource {
  const std::string* data;
  size_t pos;
  char error[256];
};

void png_on_error(png_structp png, png_const_charp msg) {
  auto* src = static_cast<PngSource*>(png_get_error_ptr(png));
  std::snprintf(src->error, sizeof(src->error), "%s", msg);
  png_longjmp(png, 1);
}

// libpng warnings (an sRGB profile it dislikes, an unknown chunk) leave the pixels intact.
void png_on_warning(png_structp, png_const_charp) {}

void png_on_read(png_structp png, png_bytep out, png_size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (src->pos + n > src->data->size()) png_error(png, "file ends early");
  std::memcpy(out, src->data->data() + src->pos, n);
  src->pos += n;
}

// Decodes into `img` (created before setjmp, so that a longjmp skips no destructor).
bool png_decode(PngSource* src, cv::Mat* img, std::vector<png_bytep>* rows) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, src, png_on_error, png_on_warning);
  if (!png) return false;
  png_infop info = png_create_info_struct(png);
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
    return false;
  }
  png_set_read_fn(png, src, png_on_read);
  png_read_info(png, info);
  const int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
  png_set_expand(png);                               // palette, low-bit gray, tRNS
  if (depth == 16) png_set_scale_16(png);            // v * 255 / 65535, rounded
  if (color & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);  // as PIL's convert("RGB")
  png_set_strip_alpha(png);                          // tRNS expanded to alpha above
  if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  if (png_get_rowbytes(png, info) != static_cast<size_t>(w) * 3) png_error(png, "unexpected pixel layout");
  if (static_cast<uint64_t>(w) * h > (uint64_t(1) << 28)) png_error(png, "image larger than 256 megapixels");
  img->create(static_cast<int>(h), static_cast<int>(w), CV_8UC3);
  rows->resize(h);
  for (png_uint_32 y = 0; y < h; ++y) (*rows)[y] = img->ptr<png_byte>(static_cast<int>(y));
  png_read_image(png, rows->data());
  png_read_end(png, nullptr);  // checks the trailing chunks up to IEND
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

struct JpegErrors {
  jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool warned;
};

void jpeg_on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrors*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Level -1 is a warning about corrupt data ("premature end of data segment"); libjpeg
// would carry on and fill the rest with grey. Higher levels are trace messages.
void jpeg_on_message(j_common_ptr cinfo, int level) {
  auto* err = reinterpret_cast<JpegErrors*>(cinfo->err);
  if (level >= 0 || err->warned) return;
  (*cinfo->err->format_message)(cinfo, err->message);
  err->warned = true;
}

bool jpeg_decode(const std::string& data, JpegErrors* err, cv::Mat* img, std::vector<unsigned char>* row) {
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&err->pub);
  err->pub.error_exit = jpeg_on_error;
  err->pub.emit_message = jpeg_on_message;
  err->warned = false;
  err->message[0] = 0;
  jpeg_create_decompress(&cinfo);
  if (setjmp(err->jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(data.data()), static_cast<unsigned long>(data.size()));
  jpeg_read_header(&cinfo, TRUE);
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  const int w = static_cast<int>(cinfo.output_width), h = static_cast<int>(cinfo.output_height);
  const int n = cinfo.output_components;
  if (static_cast<uint64_t>(w) * h > (uint64_t(1) << 28)) {
    std::snprintf(err->message, sizeof(err->message), "image larger than 256 megapixels");
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  img->create(h, w, CV_8UC3);
  row->resize(static_cast<size_t>(w) * n);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW r = row->data();
    const int y = static_cast<int>(cinfo.output_scanline);
    jpeg_read_scanlines(&cinfo, &r, 1);
    unsigned char* dst = img->ptr<unsigned char>(y);
    if (!cmyk) {
      std::memcpy(dst, row->data(), static_cast<size_t>(w) * 3);
      continue;
    }
    // Adobe writes CMYK inverted; plain CMYK is not.
    const bool inverted = cinfo.saw_Adobe_marker;
    for (int x = 0; x < w; ++x) {
      const unsigned char* s = row->data() + x * 4;
      int c = s[0], m = s[1], yy = s[2], k = s[3];
      if (!inverted) c = 255 - c, m = 255 - m, yy = 255 - yy, k = 255 - k;
      dst[x * 3 + 0] = static_cast<unsigned char>(c * k / 255);
      dst[x * 3 + 1] = static_cast<unsigned char>(m * k / 255);
      dst[x * 3 + 2] = static_cast<unsigned char>(yy * k / 255);
    }
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return !err->warned;
}

}  // namespace

cv::Mat decode_png(const std::string& data, const std::string& path) {
  PngSource src{&data, 0, {0}};
  cv::Mat img;
  std::vector<png_bytep> rows;
  if (!png_decode(&src, &img, &rows))
    SALIENT_FAIL("image '", path, "' is a corrupt or truncated PNG (", src.error[0] ? src.error : "libpng failed", ")");
  return img;
}

cv::Mat decode_jpeg(const std::string& data, const std::string& path) {
  JpegErrors err;
  cv::Mat img;
  std::vector<unsigned char> row;
  if (!jpeg_decode(data, &err, &img, &row))
    SALIENT_FAIL("image '", path, "' is a corrupt or truncated JPEG (", err.message[0] ? err.message : "libjpeg failed",
                 ")");
  return img;
}

}  // namespace detail
}  // namespace io
}  // namespace salient
