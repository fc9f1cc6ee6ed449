"""What every kind's spec shares, torch-free (the API and jobs/ validate specs with it; an
import contract keeps torch out):

- `architecture`: which architecture a spec names (built-in, torchvision builder, uploaded
  `ArchitectureRef`) and the shared bounds (input size, outputs).
- `input_shapes`: which input shapes a built-in can take, by arithmetic.
- `layer_counts`: MACs, parameters and activations of one forward pass of a built-in.
- `nad_source`: a reference to a NAD result (`NadSource`), which the probe and poison specs
  extend.
- `numbers`: the bounded float types of every spec.
- `pins`: where a spec pins the blobs its job reads (`pinned_paths`), for the blob collector.
- `presets`: the named training presets of the probe and poison specs.
- `ranges`: how a job's items split into shards (`shard_ranges`).
- `torchvision_names`: torchvision's classification builders, as a static list.
"""
