"""How far a CUDA float32 input gradient is from the float64 one, per cuDNN setting.

python3 tests/device/gradient_precision.py   (on a machine with a GPU; PyTorch only)

tests/device/device_check found input gradients of CPU and CUDA differing by 1e-2 (demo)
to 1e-1 (random ResNet-18) of their maximum with TF32 off, in LibTorch alone. This prints,
for the demo model and ResNet-18, each device's float32 gradient against the float64 one
of the CPU, so the difference can be put where it belongs.
"""
import torch
import torchvision


def top_class_gradient(model, x):
    x = x.clone().requires_grad_(True)
    out = model(x)
    k = out.argmax(1, keepdim=True)
    return torch.autograd.grad(out.gather(1, k).sum(), x)[0]


def rel(a, b):
    return ((a.double().cpu() - b.double().cpu()).abs().max() / b.double().cpu().abs().max()).item()


def main():
    torch.manual_seed(0)
    models = {
        "demo": (lambda: torch.jit.load("models/demo/fashion96.pt").eval(), (2, 3, 96, 96)),
        "resnet18": (lambda: torchvision.models.resnet18(weights=None).eval(), (2, 3, 224, 224)),
    }
    for name, (make, shape) in models.items():
        torch.manual_seed(0)
        base = make()
        state = {k: v.clone() for k, v in base.state_dict().items()}

        def fresh():
            m = make()
            m.load_state_dict(state)
            return m.eval()

        x = torch.randn(shape)
        ref = top_class_gradient(fresh().double(), x.double())
        rows = {"cpu float32": top_class_gradient(fresh(), x)}
        settings = {
            "cuda float32, defaults": dict(tf32=True, cudnn=True, det=False),
            "cuda float32, TF32 off": dict(tf32=False, cudnn=True, det=False),
            "cuda float32, TF32 off, deterministic": dict(tf32=False, cudnn=True, det=True),
            "cuda float32, cuDNN off": dict(tf32=False, cudnn=False, det=False),
        }
        for label, s in settings.items():
            torch.backends.cudnn.allow_tf32 = s["tf32"]
            torch.backends.cuda.matmul.allow_tf32 = s["tf32"]
            torch.backends.cudnn.enabled = s["cudnn"]
            torch.backends.cudnn.deterministic = s["det"]
            rows[label] = top_class_gradient(fresh().cuda(), x.cuda())
        torch.backends.cudnn.enabled = True
        rows["cuda float64"] = top_class_gradient(fresh().cuda().double(), x.cuda().double())
        for label, g in rows.items():
            print(f"{name}: {label} vs cpu float64: {rel(g, ref):.1e}")
        print(f"{name}: cuda float32 TF32 off vs cpu float32: {rel(rows['cuda float32, TF32 off'], rows['cpu float32']):.1e}")


def scripted(path_or_model, shape):
    """TorchScript on CUDA, TF32 off: calls 1-4 (the profiling executor optimises a graph
    on a later call), with the TensorExpr fuser on and off, against the CPU's float64."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    x = torch.randn(shape)
    for fuser in (True, False):
        torch._C._jit_set_texpr_fuser_enabled(fuser)
        m = path_or_model()
        ref = top_class_gradient(path_or_model().double(), x.double())
        mc = m.cuda()
        diffs = [rel(top_class_gradient(mc, x.cuda()), ref) for _ in range(4)]
        print(f"scripted {shape}: fuser {'on' if fuser else 'off'}, calls 1-4 vs cpu float64: "
              + " ".join(f"{d:.1e}" for d in diffs))
    torch._C._jit_set_texpr_fuser_enabled(True)


if __name__ == "__main__":
    main()
    scripted(lambda: torch.jit.load("models/demo/fashion96.pt").eval(), (2, 3, 96, 96))
    torch.manual_seed(0)
    r18 = torchvision.models.resnet18(weights=None).eval()
    traced = torch.jit.trace(r18, torch.randn(1, 3, 224, 224))
    traced.save("/tmp/r18.pt")
    scripted(lambda: torch.jit.load("/tmp/r18.pt").eval(), (2, 3, 224, 224))
