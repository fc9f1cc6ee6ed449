"""The poison kind: NAD carriers planted in an image dataset, and the flipped-basis experiment.

- `spec`: `PoisonSpec` (torch-free); `datasets`: the image datasets it poisons; `engine`:
  `run_poison`; `figures`: accuracies, training curves and examples (matplotlib, torch-free).
- `sandboxed`: the kind's work on an uploaded architecture, inside the sandbox child
  (`nadcore.uploaded.isolated` runs it).
"""
