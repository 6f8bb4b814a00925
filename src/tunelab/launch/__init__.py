"""Launching: accelerate configs per hardware profile, DeepSpeed checks, the run plan."""
