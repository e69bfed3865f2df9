"""The chunked-loading training example: typed YAML config, a torchvision video model, the trainer."""
