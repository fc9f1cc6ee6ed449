"""Networks of any architecture a spec names, drawn fast and reproducibly.

- `factory`: the one entry point (`build_model`, `model_factory`); `zoo`: the paper's built-in
  architectures and torchvision builders; `init`: fast random initialization of many networks;
  `layers`: nadcore's own layers; `counting`: FLOPs of one forward pass on the meta device.
"""
