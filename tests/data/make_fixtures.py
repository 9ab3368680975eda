"""Regenerates the small TorchScript fixtures in tests/data/models (committed).

Run with Debian's PyTorch: /usr/bin/python3 tests/data/make_fixtures.py
"""
import os
import torch
import torch.nn as nn

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")


class Block(nn.Module):
    """Residual block with one in-place ReLU module called twice and an in-place add."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        out += x
        out = self.relu(out)
        return out


class ResNetTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.body = nn.Sequential(Block(8), Block(8))
        self.drop = nn.Dropout(0.5)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.relu(self.stem(x))
        x = self.body(x)
        x = self.drop(x)
        return self.fc(torch.flatten(self.pool(x), 1))


class SqrtNet(nn.Module):
    """d sqrt(|x|)/dx is infinite at 0: a zero input gives non-finite gradients."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(torch.sqrt(x.abs()).mean([2, 3]))


def main():
    os.makedirs(HERE, exist_ok=True)
    torch.manual_seed(0)
    net = ResNetTiny()
    # Non-trivial BN statistics, so that eval and train mode differ.
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.randn(8, 3, 16, 16) * 1.3 + 0.2)
    net.eval()
    example = torch.randn(2, 3, 16, 16)
    torch.jit.trace(net, example).save(os.path.join(HERE, "resnet_tiny_traced.pt"))
    torch.jit.script(net).save(os.path.join(HERE, "resnet_tiny_scripted.pt"))
    torch.jit.script(SqrtNet().eval()).save(os.path.join(HERE, "sqrt_scripted.pt"))


if __name__ == "__main__":
    main()
