"""Traces torchvision models with random weights for the benchmarks (not committed).

/usr/bin/python3 bench/trace_models.py OUT_DIR
"""
import os
import sys

import torch
import torchvision


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "build/bench"
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    for name in ("resnet50", "resnet18"):
        path = os.path.join(out, name + ".pt")
        if os.path.exists(path):
            continue
        model = getattr(torchvision.models, name)(weights=None).eval()
        torch.jit.trace(model, torch.randn(1, 3, 224, 224)).save(path)
        print("traced", path)


if __name__ == "__main__":
    main()
