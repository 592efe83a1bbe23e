"""PyTorch's CPU convolutions, layer by layer, for comparison with conv_backward.py.

    pip install -e ".[torch]"
    python experiments/torch_conv_layers.py [--batch-size 128] [--dtype bfloat16]

Each 3x3 convolution of the augmented network (no bias, channels-last), forward alone
(no_grad) and forward+backward (gradients for input and kernel; the first layer's input
needs none, as in training), in GFLOP/s as conv_backward.py counts them (forward =
2*B*H*W*9*Cin*Cout, forward+backward = 3x that). --dtype bfloat16 uses autocast.
"""

import os
import time

# The same convolutions and command line as the JAX per-layer script.
from conv_backward import LAYERS, layer_args


def main():
  import torch
  args = layer_args(__doc__)
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  b, bf16 = args.batch_size, args.dtype == "bfloat16"
  print(f"PyTorch {torch.__version__}, batch {b}, {args.dtype}; "
        "GFLOP/s forward / forward+backward")
  for h, ci, co in LAYERS:
    conv = torch.nn.Conv2d(ci, co, 3, padding=1, bias=False).to(
        memory_format=torch.channels_last)
    x = torch.randn(b, ci, h, h).to(memory_format=torch.channels_last)
    x.requires_grad_(ci > 1)
    flops = 2 * b * h * h * 9 * ci * co

    def forward(conv=conv, x=x):
      with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        conv(x)

    def forward_backward(conv=conv, x=x):
      with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = conv(x)
      y.float().square().sum().backward()

    rates = []
    for fn, mult in ((forward, 1), (forward_backward, 3)):
      fn()
      times = []
      for _ in range(3):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
      rates.append(mult * flops / min(times) / 1e9)
    print(f"{h:2d}x{h:<2d} {ci:3d}->{co:3d}: torch {rates[0]:5.0f} / {rates[1]:5.0f}",
          flush=True)


if __name__ == "__main__":
  main()
