#!/usr/bin/env bash
# Builds the LibTorch-only layers (model/, methods/, eval/) against the PyTorch 2.x install
# of the current python3 and runs every method on a traced and a scripted CNN made here.
# For a machine with PyTorch 2.x (not Debian's 1.13): scripts/libtorch2_check.sh OUT_DIR
set -euo pipefail
out="${1:-/tmp/salient_lt2}"
mkdir -p "$out"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=$(command -v python3)
tp=$("$py" -c "import torch, os; print(os.path.dirname(torch.__file__))")
abi=$("$py" -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
flags="-std=c++17 -O1 -D_GLIBCXX_USE_CXX11_ABI=$abi -I$root/include -I$root/src -I$tp/include -I$tp/include/torch/csrc/api/include"
srcs=$(ls "$root"/src/error.cpp "$root"/src/model/*.cpp "$root"/src/methods/*.cpp "$root"/src/eval/*.cpp "$root/scripts/libtorch2_check.cpp")
# Every file is compiled (xargs goes on past failures) and every failure shown.
printf '%s\n' $srcs | xargs -P "$(nproc)" -I{} sh -c "g++ $flags -c {} -o $out/\$(basename {} .cpp).o 2> $out/\$(basename {} .cpp).log || { echo 'compile failed: {}'; grep -m 8 'error' $out/\$(basename {} .cpp).log; exit 1; }"
g++ "$out"/*.o -o "$out/check" -L"$tp/lib" -Wl,-rpath,"$tp/lib" -ltorch -ltorch_cpu -lc10 -lpthread
# torch.jit.script reads the class's source, so the model lives in a file.
cat > "$out/make_models.py" <<'PY'
import sys, torch
out = sys.argv[1]
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(inplace=True),
            torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(inplace=True))
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(16, 5)
    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))
torch.manual_seed(0)
m = Net().eval()
torch.jit.trace(m, torch.randn(1, 3, 64, 64)).save(out + "/traced.pt")
torch.jit.script(m).save(out + "/scripted.pt")
PY
"$py" "$out/make_models.py" "$out"
"$out/check" "$out/traced.pt" "$out/scripted.pt"
