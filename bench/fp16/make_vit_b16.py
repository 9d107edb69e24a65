"""torchvision vit_b_16 (ViT-B/16, 86M parameters) exported by the TorchScript exporter, for the fp16
overflow study (bench/fp16). No pretrained weights exist offline, so the random init is made
trained-like where it matters for fp16: trained ViTs carry a few residual channels with magnitudes in
the hundreds ("massive activations"), which a LayerNorm decomposed at opset < 17 squares past fp16's
65504. We plant such channels through the MLP output biases and give the classifier head real weights.
Usage: /usr/bin/python3 make_vit_b16.py OUT_DIR [--opset 14] [--sets 3] [--outlier 300]
Writes OUT_DIR/model.onnx and OUT_DIR/test_data_set_K/{input_0,output_0}.pb."""
import argparse
import os

import numpy as np
import torch
import torchvision
from onnx import numpy_helper

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--opset", type=int, default=14)
ap.add_argument("--sets", type=int, default=3)
ap.add_argument("--outlier", type=float, default=300.0)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()

torch.manual_seed(a.seed)
m = torchvision.models.vit_b_16(weights=None).eval()
with torch.no_grad():
    g = torch.Generator().manual_seed(a.seed)
    # Massive activations: two residual channels pushed to +-outlier by early layers' MLP biases.
    for i, layer in enumerate(m.encoder.layers):
        fc2 = layer.mlp[3]
        if i in (1, 2):
            fc2.bias[17] += a.outlier / 2
            fc2.bias[401] -= a.outlier / 2
    m.heads.head.weight.normal_(0, 0.05, generator=g)
    m.heads.head.bias.normal_(0, 0.1, generator=g)

os.makedirs(a.out, exist_ok=True)
x0 = torch.randn(1, 3, 224, 224)
torch.onnx.export(m, x0, os.path.join(a.out, "model.onnx"), opset_version=a.opset,
                  input_names=["pixel_values"], output_names=["logits"],
                  dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}})
for k in range(a.sets):
    # Smooth image-like inputs (ImageNet-normalized range), not white noise.
    gk = torch.Generator().manual_seed(100 + k)
    low = torch.rand(1, 3, 14, 14, generator=gk)
    img = torch.nn.functional.interpolate(low, size=(224, 224), mode="bilinear", align_corners=False)
    x = ((img - 0.45) / 0.226).float()
    with torch.no_grad():
        y = m(x)
    d = os.path.join(a.out, f"test_data_set_{k}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "input_0.pb"), "wb") as f:
        f.write(numpy_helper.from_array(x.numpy(), "pixel_values").SerializeToString())
    with open(os.path.join(d, "output_0.pb"), "wb") as f:
        f.write(numpy_helper.from_array(y.numpy(), "logits").SerializeToString())
print("wrote", a.out)
