#include "salient/error.hpp"

namespace salient {

Error::Error(const std::string& message, const char* file, int line)
    : std::runtime_error(message),
      where_(file && *file ? std::string(file) + ":" + std::to_string(line) : std::string()) {}

}  // namespace salient
