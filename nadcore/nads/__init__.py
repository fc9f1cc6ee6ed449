"""The NAD kind: random networks -> input gradients -> partial results -> NADs.

- `spec`: `NADSpec` (torch-free) and `cost`: what a spec costs before running it (torch-free).
- `engine`: `estimate_nads`, `run_spec`, shards and the merge; `schedule`: how a spec runs on
  a device (strategy, pixel blocks, network chunks); `precision`: the arithmetic of the forward
  passes; `gradients`: input gradients of many networks at one point.
- `partial`: mergeable per-shard results; `decompose`: PCA and split-half stability;
  `identifiability`: stability against chance (torch-free).
- `figures`: preview.png and spectrum.png (matplotlib, torch-free).
- `sandboxed`: the kind's work on an uploaded architecture, inside the sandbox child
  (`nadcore.uploaded.isolated` runs it).
"""
