#include <ATen/ATen.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "salient/error.hpp"
#include "salient/io.hpp"

namespace salient {
namespace io {

at::Tensor read_npy(const std::string& path) {
  std::error_code ec;
  SALIENT_CHECK(std::filesystem::is_regular_file(path, ec), "tensor file '", path, "' not found");
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  const std::string data = ss.str();
  SALIENT_CHECK(!data.empty(), "tensor file '", path, "' is empty");
  SALIENT_CHECK(data.size() >= 10 && data.compare(0, 6, "\x93NUMPY") == 0, "tensor file '", path,
                "' is not a .npy file");
  const int major = static_cast<unsigned char>(data[6]);
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(data[8]) | (static_cast<unsigned char>(data[9]) << 8);
    offset = 10;
  } else {
    SALIENT_CHECK(data.size() >= 12, "tensor file '", path, "' is truncated");
    uint32_t len = 0;
    std::memcpy(&len, data.data() + 8, 4);
    header_len = len;
    offset = 12;
  }
  SALIENT_CHECK(data.size() >= offset + header_len, "tensor file '", path, "' is truncated");
  const std::string header = data.substr(offset, header_len);
  std::smatch m;
  SALIENT_CHECK(std::regex_search(header, m, std::regex("'descr'\\s*:\\s*'([^']*)'")), "tensor file '",
                path, "': no dtype in header");
  const std::string descr = m[1];
  SALIENT_CHECK(!std::regex_search(header, std::regex("'fortran_order'\\s*:\\s*True")), "tensor file '",
                path, "' is in Fortran order; save it C-contiguous");
  SALIENT_CHECK(std::regex_search(header, m, std::regex("'shape'\\s*:\\s*\\(([^)]*)\\)")), "tensor file '",
                path, "': no shape in header");
  std::vector<int64_t> shape;
  std::string dims = m[1];
  std::regex num("\\d+");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), num); it != std::sregex_iterator(); ++it)
    shape.push_back(std::stoll(it->str()));

  at::ScalarType type;
  size_t item = 0;
  if (descr == "<f4") type = at::kFloat, item = 4;
  else if (descr == "<f8") type = at::kDouble, item = 8;
  else if (descr == "<i8") type = at::kLong, item = 8;
  else if (descr == "<i4") type = at::kInt, item = 4;
  else if (descr == "|u1" || descr == "<u1") type = at::kByte, item = 1;
  else SALIENT_FAIL("tensor file '", path, "' has dtype '", descr, "'; expected float32 (<f4)");

  int64_t numel = 1;
  for (auto d : shape) numel *= d;
  const size_t body = data.size() - offset - header_len;
  SALIENT_CHECK(body == static_cast<size_t>(numel) * item, "tensor file '", path, "' is truncated: ",
                body, " bytes of data for ", numel, " values");
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type));
  std::memcpy(t.data_ptr(), data.data() + offset + header_len, body);
  if (type == at::kDouble) t = t.to(at::kFloat);
  if (type == at::kInt || type == at::kByte) t = t.to(at::kLong);
  return t;
}

void write_npy(const std::string& path, const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kCPU).to(at::kFloat).contiguous();
  std::ostringstream h;
  h << "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (int64_t i = 0; i < c.dim(); ++i) h << c.size(i) << (c.dim() == 1 || i + 1 < c.dim() ? ", " : "");
  h << "), }";
  std::string header = h.str();
  // Pad so that magic + length + header is a multiple of 64, ending in '\n'.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  out.append(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()) * sizeof(float));
  write_file_atomic(path, out);
}

}  // namespace io
}  // namespace salient
