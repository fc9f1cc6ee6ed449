"""What the kinds that train models share (probe and poison).

- `recipe`: the paper's training recipe (`fit`); `shards`: which directions or indices a shard
  trains and its partial result; `learning_check`: did the training learn anything (torch-free).
"""
