"""Speed: convae_jax against a PyTorch baseline of the same model, side by side (`python -m benchmarks.speed`)."""
