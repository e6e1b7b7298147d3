"""Models: presets and weights, the embedder, preprocessing specs, and which model a library uses."""
