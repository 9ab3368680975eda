#pragma once
// SALIENT_ARG declares an option with a default, a chainable setter and a getter,
// in the style of torch::nn options:
//
//   struct SmoothGradOptions {
//     SALIENT_ARG(int64_t, n_samples) = 20;
//   };
//   auto o = SmoothGradOptions().n_samples(50);   o.n_samples() == 50
#include <utility>

#define SALIENT_ARG(T, name)                                   \
 public:                                                       \
  auto name(const T& new_##name)->decltype(*this)& {           \
    this->name##_ = new_##name;                                \
    return *this;                                              \
  }                                                            \
  auto name(T&& new_##name)->decltype(*this)& {                \
    this->name##_ = std::move(new_##name);                     \
    return *this;                                              \
  }                                                            \
  const T& name() const noexcept { return this->name##_; }     \
  T& name() noexcept { return this->name##_; }                 \
                                                               \
 private:                                                      \
  T name##_ /* NOLINT */
