"""The probe kind: how well an architecture learns a linearly separable distribution along chosen
directions.

- `spec`: `ProbeSpec` (torch-free); `fourier_grid`: which Fourier frequencies it trains.
- `directions`: the unit directions; `distribution`: the distribution D(v); `engine`: one fresh
  model trained per direction (`run_probe`).
- `power`: whether a probe of this size can tell a direction from chance; `intervals`:
  confidence intervals of the accuracies (both torch-free).
- `figures`: the heatmap, accuracy against the NAD index and the training curves (matplotlib,
  torch-free).
- `sandboxed`: the kind's work on an uploaded architecture, inside the sandbox child
  (`nadcore.uploaded.isolated` runs it).
"""
