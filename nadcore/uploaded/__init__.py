"""Users' own architectures (TorchScript archives and torch.export programs): everything that
reads their untrusted bytes.

- `strict_zip`: the one strict zip reader and canonical writer; `archive_format`: which kind of
  archive a file is (both torch-free).
- `untrusted`: loading an archive as a plain network without running its code;
  `operators`: the operator allow-list; `torchvision_operators`: what torchvision's classifiers
  call, which the allow-list is checked against; `code_checks`: checks of code-like members.
- `network`: an uploaded architecture as networks (re-initialization, output selection);
  `validation`: what an upload is checked for; `shapes`: which input dimension a model refuses;
  `engine_assumptions`: what the engine assumes of a network, checked at validation.
- `isolated`: the child side of the worker's sandbox.
"""
