// A program outside the project that finds salient with find_package(salient).
#include <ATen/ATen.h>
#include <salient/salient.hpp>

#include <iostream>

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  auto model = salient::Model::load(argv[1]);
  auto a = salient::gradcam(model, at::randn({1, 3, 64, 64}));
  std::cout << a.layer << " " << a.map.sizes() << "\n";
  return a.layer == "features" && a.map.size(2) == 64 ? 0 : 1;
}
