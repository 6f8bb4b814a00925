"""What the training path needs from the launch it runs under: compute dtype, DeepSpeed and FSDP2 checks."""
