#!/usr/bin/python3
"""Writes an evaluation set for the demo model: composites from the Fashion-MNIST t10k split
(Debian's dataset-fashion-mnist), made exactly as the demo's training and test composites,
with the item's box, as a `salient evaluate` manifest.

    /usr/bin/python3 scripts/eval_set.py OUT_DIR [--count 200] [--seed 7]

OUT_DIR/images/NNN.png and OUT_DIR/manifest.jsonl ({"image", "target", "box"}; the box is
[x0, y0, x1, y1], inclusive, in the 96x96 model input). Nothing is committed; the set is
regenerated identically from the seed.
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_demo  # noqa: E402  (the composite generator)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data-dir", default=train_demo.FMNIST_DIR)
    args = ap.parse_args()
    imgs, labels = train_demo.load_split(args.data_dir, "t10k")
    rng = np.random.default_rng([args.seed, 3])  # not the training (1234) or demo-sample streams
    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
    with open(os.path.join(args.out, "manifest.jsonl"), "w") as f:
        for i in range(args.count):
            img, label, box = train_demo.make_composite(rng, imgs, labels)
            name = f"images/{i:04d}.png"
            Image.fromarray(img, mode="RGB").save(os.path.join(args.out, name))
            f.write(json.dumps({"image": name, "target": int(label), "box": [int(v) for v in box]}) + "\n")
    print(f"wrote {args.count} composites to {args.out}")


if __name__ == "__main__":
    main()
