"""Data-parallel training (jax.jit over one 'data' mesh), Orbax checkpoints and logs."""
