"""Check that this Python's PyTorch works for the package; one line either way.

    .venv/bin/python tools/check_env.py

torch and torchvision import together, one of torchvision's compiled operators (nms) runs,
and get_model() does a forward pass on a tiny tensor. Prints the versions and the device, exit
0; or one line saying what does not work, exit 1. tools/setup.sh runs it on what it built.
"""

from __future__ import annotations

import sys
from pathlib import Path


def check() -> str:
    """The versions and the device in words; RuntimeError with one line when something fails."""
    try:
        import torch
    except Exception as error:  # noqa: BLE001 - any failure to import is the answer
        raise RuntimeError(f"torch does not import ({type(error).__name__}: {error})") from None
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    try:
        import segmentation  # imports torchvision, naming a mismatch in one line
    except ImportError as error:
        raise RuntimeError(str(error)) from None
    torchvision = segmentation.torchvision
    try:
        boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]])
        kept = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
        with torch.no_grad():
            out = segmentation.get_model().eval()(torch.zeros(1, 3, 64, 64))
    except Exception as error:  # noqa: BLE001
        raise RuntimeError(f"torch {torch.__version__} with torchvision {torchvision.__version__}"
                           f" imports but does not run: {type(error).__name__}: "
                           f"{' '.join(str(error).split())[:200]}") from None
    if kept.tolist() != [0] or tuple(out.shape) != (1, 1, 64, 64):
        raise RuntimeError(f"torch {torch.__version__} with torchvision {torchvision.__version__} "
                           "computes wrong results (nms or the model's forward pass)")
    if torch.cuda.is_available():
        device = f"GPU {torch.cuda.get_device_name(0)}"
    else:
        cuda = (f", a build with CUDA {torch.version.cuda}" if torch.version.cuda
                else ", CPU-only build")
        device = f"CPU (no CUDA GPU seen{cuda})"
    return f"torch {torch.__version__}, torchvision {torchvision.__version__}, {device}"


def main() -> int:
    try:
        print(f"works: {check()}")
    except RuntimeError as error:
        print(f"does not work: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
