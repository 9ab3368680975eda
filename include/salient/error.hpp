#pragma once
// The one exception type of the library, and the check macro that throws it.
//
//   SALIENT_CHECK(k >= 0 && k < classes, "target ", k, " out of range: the model has ",
//                 classes, " classes");
//   try { ... } catch (const salient::Error& e) { std::cerr << e.what() << "\n"; }
//
// what() is one line meant for a user; where() says which source line threw.
#include <sstream>
#include <stdexcept>
#include <string>

namespace salient {

class Error : public std::runtime_error {
 public:
  Error(const std::string& message, const char* file = "", int line = 0);
  const std::string& where() const { return where_; }

 private:
  std::string where_;
};

namespace detail {
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace salient

#define SALIENT_CHECK(cond, ...)                                                        \
  do {                                                                                  \
    if (!(cond)) throw ::salient::Error(::salient::detail::cat(__VA_ARGS__), __FILE__, __LINE__); \
  } while (0)

#define SALIENT_FAIL(...) throw ::salient::Error(::salient::detail::cat(__VA_ARGS__), __FILE__, __LINE__)
