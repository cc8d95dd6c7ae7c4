"""Why fp32 LRP on a GPU differs from float64: TF32. Relative error of fp32 relevance (kernels and torch rules)
against a float64 run, with TF32 on (PyTorch's cuDNN default) and off. VGG16 and ResNet-50, random weights, batch 2.

    PYTHONPATH=. python benchmarks/gpu_precision.py
"""

from __future__ import annotations

import copy
import os

import torch
import torchvision

import lrp_fx


def rel(a, b):
    return ((a.double() - b).norm() / b.norm()).item()


def main() -> None:
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| model | preset | TF32 | kernels | rel err vs fp64 |\n|---|---|---|---|---|")
    for name in ("vgg16", "resnet50"):
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)().eval().cuda()
        ref_model = copy.deepcopy(model).double()
        x = torch.randn(2, 3, 224, 224, device="cuda", dtype=torch.float64)
        for preset in ("epsilon", "epsilon_plus_flat"):
            os.environ["LRP_FX_KERNELS"] = "off"
            ref = lrp_fx.attribute(ref_model, x, target=[1, 2], composite=preset).relevance
            for tf32 in (True, False):
                torch.backends.cuda.matmul.allow_tf32 = tf32
                torch.backends.cudnn.allow_tf32 = tf32
                for mode in ("auto", "off"):
                    os.environ["LRP_FX_KERNELS"] = mode
                    got = lrp_fx.attribute(model, x.float(), target=[1, 2], composite=preset).relevance
                    print(f"| {name} | {preset} | {tf32} | {mode} | {rel(got, ref):.1e} |", flush=True)


if __name__ == "__main__":
    main()
