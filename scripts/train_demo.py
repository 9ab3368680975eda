#!/usr/bin/python3
"""Train the "Fashion-MNIST in clutter" demo model for salient.

Builds a localisation-friendly 10-class task on 96x96 RGB canvases: one
Fashion-MNIST item (rescaled, tinted) on a smooth noisy colour-gradient
background, plus class-agnostic clutter (small patches cropped from other
Fashion-MNIST images, thin line segments).  A small CNN (conv features ->
12x12 maps -> global average pool -> one Linear) is trained on freshly
generated composites from the train split, evaluated on composites from the
t10k split, and exported with torch.jit.trace (eval mode, float32, CPU).

Training runs in two phases to fit a 2-core CPU budget (about 7.5 min wall for the
whole script): phase 1 uses random 64x64 crops of the composites that contain
the whole item (the net is fully convolutional up to the global pool, and a
64x64 crop is ~3x cheaper than the full canvas); phase 2 fine-tunes on full
96x96 composites so that BN statistics and pooled-feature scale match the real
input.  Layer widths are 16,32,64,128 (narrower than 24,48,96,128 in the first
three blocks, for speed); the module layout is unchanged: features.0 ..
features.23 (last = ReLU on the 128x12x12 maps), pool, classifier.

Everything is deterministic given --seed (same machine, same torch build).

Usage:
    /usr/bin/python3 scripts/train_demo.py --out-model models/demo/fashion96.pt --out-data data/demo

Model input: float32 [N,3,96,96], RGB in [0,1], no mean/std normalisation.
"""

import argparse
import gzip
import json
import math
import os
import re
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CANVAS = 96
FMNIST_DIR = "/usr/share/datasets/fashion-mnist"


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------

def load_idx_images(path):
    with gzip.open(path, "rb") as f:
        buf = f.read()
    n, rows, cols = (int.from_bytes(buf[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(buf, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def load_idx_labels(path):
    with gzip.open(path, "rb") as f:
        buf = f.read()
    return np.frombuffer(buf, dtype=np.uint8, offset=8).astype(np.int64)


def load_split(data_dir, split):
    imgs = load_idx_images(os.path.join(data_dir, f"{split}-images-idx3-ubyte.gz"))
    labels = load_idx_labels(os.path.join(data_dir, f"{split}-labels-idx1-ubyte.gz"))
    assert len(imgs) == len(labels)
    return imgs, labels


def resize_gray(img_u8, w, h):
    """Bilinear resize of a uint8 (or float) 2-D array; returns float32 in [0,1]."""
    im = Image.fromarray(np.asarray(img_u8, dtype=np.float32), mode="F")
    return np.clip(np.asarray(im.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0, 0.0, 1.0)


def bright_colour(rng):
    """A random, fairly bright RGB colour: HSV with S in [0.1,0.75], V in [0.8,1], luminance >= 0.4."""
    while True:
        h = rng.uniform(0.0, 6.0)
        s = rng.uniform(0.1, 0.75)
        v = rng.uniform(0.8, 1.0)
        c = v * s
        x = c * (1.0 - abs(h % 2.0 - 1.0))
        rgb = np.array([(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6],
                       dtype=np.float32) + np.float32(v - c)
        if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] >= 0.4:
            return rgb


def composite(canvas, alpha, colour, y0, x0):
    """Premultiplied 'over': canvas = alpha*colour + (1-alpha)*canvas, in place."""
    h, w = alpha.shape
    a = alpha[:, :, None]
    region = canvas[y0:y0 + h, x0:x0 + w]
    region *= (1.0 - a)
    region += a * colour[None, None, :]


def make_background(rng):
    """Smooth bilinear gradient between 4 random corner colours + Gaussian noise."""
    corners = rng.uniform(0.0, 0.55, size=(2, 2, 3)).astype(np.float32)
    t = np.linspace(0.0, 1.0, CANVAS, dtype=np.float32)
    v = t[:, None, None]
    u = t[None, :, None]
    top = corners[0, 0] * (1 - u) + corners[0, 1] * u
    bot = corners[1, 0] * (1 - u) + corners[1, 1] * u
    bg = top * (1 - v) + bot * v
    bg = bg + 0.03 * rng.standard_normal(size=bg.shape, dtype=np.float32)
    return np.clip(bg, 0.0, 1.0).astype(np.float32)


def draw_line_mask(rng):
    """Anti-alias-free thin line segment (1-2 px) as a full-canvas alpha mask."""
    mask = np.zeros((CANVAS, CANVAS), dtype=np.float32)
    p0 = rng.uniform(0, CANVAS - 1, size=2)
    ang = rng.uniform(0, math.pi)
    length = rng.uniform(15, 60)
    p1 = p0 + length * np.array([math.cos(ang), math.sin(ang)])
    n = int(length * 2) + 2
    tt = np.linspace(0.0, 1.0, n)
    xs = p0[0] + (p1[0] - p0[0]) * tt
    ys = p0[1] + (p1[1] - p0[1]) * tt
    width = int(rng.integers(1, 3))
    for dx in range(width):
        for dy in range(width):
            xi = np.round(xs).astype(int) + dx
            yi = np.round(ys).astype(int) + dy
            ok = (xi >= 0) & (xi < CANVAS) & (yi >= 0) & (yi < CANVAS)
            mask[yi[ok], xi[ok]] = 1.0
    return mask * rng.uniform(0.5, 0.95)


def make_composite(rng, imgs, labels):
    """One composite.  Returns (uint8 HxWx3 image, label, box [x0,y0,x1,y1])."""
    n = len(imgs)
    idx = int(rng.integers(n))
    label = int(labels[idx])
    canvas = make_background(rng)

    # --- the item -------------------------------------------------------
    s = int(rng.integers(30, 47))                      # size in [30,46]
    alpha = resize_gray(imgs[idx], s, s)
    x0 = int(rng.integers(0, CANVAS - s + 1))
    y0 = int(rng.integers(0, CANVAS - s + 1))
    composite(canvas, alpha, bright_colour(rng), y0, x0)
    ys, xs = np.nonzero(alpha > 0.1)
    box = [x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()), y0 + int(ys.max())]
    scale = s / 28.0

    # --- distractor patches from other items -----------------------------
    for _ in range(int(rng.integers(3, 7))):
        j = int(rng.integers(n - 1))
        j = j + 1 if j >= idx else j                   # a different image
        p = int(rng.integers(6, 13))                   # patch size on canvas
        q = max(3, min(20, int(round(p / scale))))     # crop size in source (same texture scale as the item)
        src = imgs[j]
        for _try in range(8):
            cy = int(rng.integers(0, 28 - q + 1))
            cx = int(rng.integers(0, 28 - q + 1))
            crop = src[cy:cy + q, cx:cx + q]
            if crop.mean() > 40:
                break
        palpha = resize_gray(crop, p, p)
        for _try in range(20):                         # centre outside the item box
            py = int(rng.integers(0, CANVAS - p + 1))
            px = int(rng.integers(0, CANVAS - p + 1))
            ccx, ccy = px + p / 2.0, py + p / 2.0
            if not (box[0] <= ccx <= box[2] and box[1] <= ccy <= box[3]):
                break
        composite(canvas, palpha, bright_colour(rng), py, px)

    # --- thin line segments ----------------------------------------------
    for _ in range(int(rng.integers(1, 4))):
        mask = draw_line_mask(rng)
        rows = np.nonzero(mask.any(1))[0]
        cols = np.nonzero(mask.any(0))[0]
        colour = bright_colour(rng)
        if len(rows):
            r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            composite(canvas, mask[r0:r1, c0:c1], colour, r0, c0)

    img = np.clip(np.round(canvas * 255.0), 0, 255).astype(np.uint8)
    return img, label, box


def make_batch(rng, imgs, labels, count):
    X = np.empty((count, CANVAS, CANVAS, 3), dtype=np.uint8)
    Y = np.empty((count,), dtype=np.int64)
    B = np.empty((count, 4), dtype=np.int64)
    for i in range(count):
        X[i], Y[i], B[i] = make_composite(rng, imgs, labels)
    return X, Y, B


def to_tensor(X_u8):
    """uint8 NHWC -> float32 NCHW in [0,1] (exactly what a PNG loader would give)."""
    return torch.from_numpy(X_u8).permute(0, 3, 1, 2).float().div_(255.0)


# ----------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------

def conv_bn_relu(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=False)]


class DemoNet(nn.Module):
    """Input: [N,3,96,96] RGB in [0,1], no further normalisation.  Final maps 12x12."""

    def __init__(self, widths=(24, 48, 96, 128), num_classes=10):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.features = nn.Sequential(
            *conv_bn_relu(3, w1), *conv_bn_relu(w1, w1), nn.MaxPool2d(2),    # 48
            *conv_bn_relu(w1, w2), *conv_bn_relu(w2, w2), nn.MaxPool2d(2),   # 24
            *conv_bn_relu(w2, w3), *conv_bn_relu(w3, w3), nn.MaxPool2d(2),   # 12
            *conv_bn_relu(w3, w4))                                           # 12x12
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(w4, num_classes)

    def forward(self, x):
        x = self.features(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def gradcam_peak(model, x, target):
    """Grad-CAM on model.features output; returns (row, col) of the argmax on the 12x12 grid."""
    feats = model.features(x)
    feats.retain_grad()
    logits = model.classifier(torch.flatten(model.pool(feats), 1))
    model.zero_grad()
    logits[0, target].backward()
    w = feats.grad[0].mean(dim=(1, 2))
    cam = F.relu((w[:, None, None] * feats[0]).sum(0)).detach()
    k = int(torch.argmax(cam))
    return k // cam.shape[1], k % cam.shape[1], cam


# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------

def slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-model", default="models/demo/fashion96.pt")
    ap.add_argument("--out-data", default="data/demo")
    ap.add_argument("--data-dir", default=FMNIST_DIR)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--train-samples", type=int, default=50000,
                    help="phase 1: composites, each used as --crops random crops that contain the item")
    ap.add_argument("--crop", type=int, default=64, help="phase 1 crop size (px)")
    ap.add_argument("--crops", type=int, default=3, help="phase 1 crops per composite")
    ap.add_argument("--finetune-samples", type=int, default=8000,
                    help="phase 2: full 96x96 composites (adapts pooling/BN statistics to the full canvas)")
    ap.add_argument("--chunk", type=int, default=10000, help="composites generated at a time")
    ap.add_argument("--test-samples", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--widths", default="16,32,64,128")
    ap.add_argument("--input-noise", type=float, default=0.0,
                    help="std of Gaussian noise added to training inputs: smoother input gradients")
    ap.add_argument("--num-samples", type=int, default=16)
    ap.add_argument("--max-wrong", type=int, default=2, help="at most this many misclassified demo samples")
    args = ap.parse_args()

    t_start = time.time()
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)   # denormals make late (small-gradient) CPU steps several times slower
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    train_imgs, train_labels = load_split(args.data_dir, "train")
    test_imgs, test_labels = load_split(args.data_dir, "t10k")
    widths = tuple(int(v) for v in args.widths.split(","))

    model = DemoNet(widths).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd)
    # Phase 1 trains on crops (the net is fully convolutional up to the global average pool, so a
    # 64x64 crop that contains the whole item is a valid, ~3x cheaper training example); phase 2
    # trains on full 96x96 canvases so that BN statistics and the pooled-feature scale match the
    # real input.  One cosine learning-rate schedule spans both phases.
    def chunks(n):
        return [min(args.chunk, n - i) for i in range(0, n, args.chunk)]
    plan = [(1, c, args.crop, args.crops) for c in chunks(args.train_samples)] + \
           [(2, c, CANVAS, 1) for c in chunks(args.finetune_samples)]
    steps_total = sum((c * k) // args.batch for _, c, _, k in plan)
    warmup = min(100, steps_total // 10)

    def lr_at(step):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, steps_total - warmup)
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))

    def random_crops(rng, X, B, size, k):
        """k random size x size crops per image, each containing the item's box."""
        n = len(X)
        out = np.empty((n * k, size, size, 3), dtype=np.uint8)
        for i in range(n):
            x0, y0, x1, y1 = B[i]
            for j in range(k):
                cx = int(rng.integers(max(0, x1 - size + 1), min(x0, CANVAS - size) + 1))
                cy = int(rng.integers(max(0, y1 - size + 1), min(y0, CANVAS - size) + 1))
                out[j * n + i] = X[i, cy:cy + size, cx:cx + size]
        return out

    # --- training on fresh composites, chunk by chunk ---------------------
    step = 0
    gen_time = 0.0
    seen_total = 0
    t_train = time.time()
    for c, (phase, count, size, k) in enumerate(plan):
        tg = time.time()
        rng = np.random.default_rng([args.seed, 0, c])
        X, Y, B = make_batch(rng, train_imgs, train_labels, count)
        if size != CANVAS:
            X = random_crops(rng, X, B, size, k)
            Y = np.tile(Y, k)
        perm = rng.permutation(len(Y))
        X, Y = X[perm], Y[perm]
        gen_time += time.time() - tg
        model.train()
        run_loss, run_acc, seen = 0.0, 0.0, 0
        tc = time.time()
        for b in range(len(Y) // args.batch):
            sl = slice(b * args.batch, (b + 1) * args.batch)
            x = to_tensor(X[sl])
            if args.input_noise > 0:
                # Noise-augmented training makes the model's input gradients far less noisy
                # (its gradient maps then sit on the item, not on the background).
                x = x + args.input_noise * torch.randn_like(x)
            x = x.contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(Y[sl])
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            run_loss += float(loss) * len(y)
            run_acc += float((logits.argmax(1) == y).sum())
            seen += len(y)
        seen_total += seen
        print(f"chunk {c + 1}/{len(plan)} (phase {phase}, {size}px): step {step}/{steps_total} "
              f"loss {run_loss / max(seen, 1):.3f} train-acc {run_acc / max(seen, 1):.3f} "
              f"lr {lr_at(step - 1):.2e} {(time.time() - tc) / max(1, seen // args.batch):.3f}s/step "
              f"elapsed {time.time() - t_start:.0f}s", flush=True)
        del X, Y
    train_time = time.time() - t_train
    print(f"training: {step} steps, {seen_total} examples from {args.train_samples + args.finetune_samples} "
          f"composites, {train_time:.0f}s "
          f"(of which data generation {gen_time:.0f}s)", flush=True)

    # --- evaluation on t10k composites -------------------------------------
    model = model.to(memory_format=torch.contiguous_format).float().eval()
    Xt, Yt, _ = make_batch(np.random.default_rng([args.seed, 1]), test_imgs, test_labels, args.test_samples)
    correct = 0
    with torch.no_grad():
        for b in range(0, len(Yt), 200):
            pred = model(to_tensor(Xt[b:b + 200])).argmax(1).numpy()
            correct += int((pred == Yt[b:b + 200]).sum())
    test_acc = correct / len(Yt)
    print(f"TEST ACCURACY: {test_acc * 100:.2f}% on {len(Yt)} t10k composites", flush=True)

    # --- export ------------------------------------------------------------
    os.makedirs(os.path.dirname(os.path.abspath(args.out_model)), exist_ok=True)
    example = torch.rand(1, 3, CANVAS, CANVAS, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
        ref = model(example)
    traced.save(args.out_model)
    reloaded = torch.jit.load(args.out_model)
    with torch.no_grad():
        diff = float((reloaded(example) - ref).abs().max())
    print(f"saved {args.out_model} ({os.path.getsize(args.out_model)} bytes), reload max|diff| {diff:.2e}")

    # --- demo samples ------------------------------------------------------
    # Walk a fixed-seed stream of t10k composites and take, in generation order, the first one of
    # every class, then a second one per class until --num-samples are taken.  Misclassified
    # composites are taken like the others, except that at most --max-wrong of them are kept (so
    # the set is not dominated by failures); confidence plays no role in the choice.
    out_img_dir = os.path.join(args.out_data, "images")
    os.makedirs(out_img_dir, exist_ok=True)
    for f in os.listdir(out_img_dir):
        if f.endswith(".png"):
            os.remove(os.path.join(out_img_dir, f))
    rng = np.random.default_rng([args.seed, 2])
    per_class = {}
    records = []
    n_wrong = 0
    skipped_wrong = 0
    generated = 0
    while len(records) < args.num_samples:
        img, label, box = make_composite(rng, test_imgs, test_labels)
        generated += 1
        have = per_class.get(label, 0)
        if have >= 2 or (have >= 1 and len(per_class) < len(CLASS_NAMES)):
            continue
        x = to_tensor(img[None])        # exactly the pixels that go into the (lossless) PNG
        with torch.no_grad():
            prob = F.softmax(model(x), dim=1)[0]
        pred = int(prob.argmax())
        if pred != label:
            if n_wrong >= args.max_wrong and generated <= 2000:   # (bound only matters for weak models)
                skipped_wrong += 1
                continue
            n_wrong += 1
        per_class[label] = have + 1
        name = f"{len(records):02d}_{slug(CLASS_NAMES[label])}.png"
        Image.fromarray(img, mode="RGB").save(os.path.join(out_img_dir, name))
        r, c, _ = gradcam_peak(model, x, label)
        stride = CANVAS // 12
        px, py = (c + 0.5) * stride, (r + 0.5) * stride
        hit = box[0] <= px <= box[2] and box[1] <= py <= box[3]
        records.append(dict(image=f"images/{name}", target=label, box=box, label=CLASS_NAMES[label],
                            pred=pred, prob=float(prob[pred]), p_target=float(prob[label]),
                            cam=(px, py), hit=hit))
        print(f"{name:24s} true={CLASS_NAMES[label]:12s} pred={CLASS_NAMES[pred]:12s} "
              f"p={float(prob[pred]):.3f} p(true)={float(prob[label]):.3f} box={box} "
              f"gradcam-peak=({px:.0f},{py:.0f}) {'in-box' if hit else 'OUTSIDE'}"
              f"{'' if pred == label else '  <-- misclassified'}")
    hits = sum(r["hit"] for r in records)
    # Check that the PNGs on disk give the same predictions.
    for r in records:
        x = to_tensor(np.array(Image.open(os.path.join(args.out_data, r["image"])).convert("RGB"))[None])
        with torch.no_grad():
            assert int(model(x).argmax()) == r["pred"], r["image"]
    print(f"demo samples: {len(records) - n_wrong}/{len(records)} correct, {len(per_class)} classes, "
          f"Grad-CAM peak inside box: {hits}/{len(records)} ({generated} composites generated, "
          f"{skipped_wrong} misclassified ones skipped beyond --max-wrong {args.max_wrong})")

    with open(os.path.join(args.out_data, "manifest.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps({k: r[k] for k in ("image", "target", "box", "label")}) + "\n")
    with open(os.path.join(args.out_data, "labels.txt"), "w") as f:
        f.write("\n".join(CLASS_NAMES) + "\n")

    total_time = time.time() - t_start
    cmd = "/usr/bin/python3 scripts/train_demo.py --out-model models/demo/fashion96.pt --out-data data/demo"
    lines = [
        "# Demo data: Fashion-MNIST in clutter",
        "",
        f"Generated, together with the model `{args.out_model}`, by",
        "",
        f"    {cmd}",
        "",
        "Each image is a 96x96 8-bit RGB canvas: a smooth random colour gradient with Gaussian noise",
        "(std 0.03), one Fashion-MNIST t10k item rescaled (bilinear) to 30-46 px, tinted with a random",
        "bright colour and alpha-composited with its intensity as alpha, plus clutter that does not",
        "reveal the class: 3-6 small (6-12 px) patches cropped from other Fashion-MNIST images, tinted",
        "the same way and centred outside the item's box, and 1-3 thin line segments.",
        "`manifest.jsonl` gives per image the true class index (`target`), its name (`label`) and the",
        "item's box `[x0, y0, x1, y1]`: inclusive canvas pixel coordinates of the item pixels with",
        "alpha > 0.1. `labels.txt` lists the 10 class names in index order.",
        "",
        "Model input convention: float32 tensor [N,3,96,96], RGB, values in [0,1] (8-bit value / 255),",
        "no mean/std normalisation. Output: 10 logits (no softmax). The TorchScript file is traced in",
        "eval mode (float32, CPU). Architecture: conv3x3+BN+ReLU layers with widths",
        f"{','.join(map(str, widths))} and three 2x2 max-pools; the final maps ({widths[-1]}x12x12) are the",
        f"output of `features` (last module `features.{len(model.features) - 1}`), followed by `pool`",
        "(global average) and `classifier` (one Linear).",
        "",
        f"Training (train split only): {args.train_samples} composites, each used as {args.crops} random "
        f"{args.crop}x{args.crop}",
        f"crops that contain the whole item, then {args.finetune_samples} full 96x96 composites; AdamW, "
        f"lr {args.lr:g}",
        f"(warm-up + cosine), weight decay {args.wd:g}, batch {args.batch}, {step} steps, 2 CPU threads, "
        f"torch {torch.__version__}.",
        "",
        f"Measured: test accuracy {test_acc * 100:.2f}% on {len(Yt)} composites from the t10k split.",
        f"Training took {train_time:.0f} s (data generation included), the whole script {total_time:.0f} s.",
        f"Seeds: --seed {args.seed}: torch.manual_seed({args.seed}); numpy default_rng([seed, 0, chunk])",
        "for the training chunks, [seed, 1] for the test set, [seed, 2] for these samples.",
        "",
        "Sample choice: from the [seed, 2] stream, in generation order, the first composite of every",
        "class, then a second one per class until 16 are taken; misclassified ones are taken like the",
        f"others, at most {args.max_wrong} ({skipped_wrong} further misclassified composite(s) skipped).",
        f"{len(records) - n_wrong}/{len(records)} are classified correctly; the Grad-CAM peak",
        f"(gradient-weighted `features` output, 12x12) lies inside the box for {hits}/{len(records)}.",
    ]
    wrong = [r for r in records if r["pred"] != r["target"]]
    if wrong:
        lines.append("Misclassified by the model: " + ", ".join(
            f"`{r['image']}` (predicted {CLASS_NAMES[r['pred']]}, p={r['prob']:.2f})" for r in wrong) + ".")
    lines += ["", "| image | true | predicted | p(predicted) |", "|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['image']} | {r['label']} | {CLASS_NAMES[r['pred']]} | {r['prob']:.3f} |")
    with open(os.path.join(args.out_data, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"total wall time {total_time:.0f}s")


if __name__ == "__main__":
    main()
