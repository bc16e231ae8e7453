"""Device-resident rollout and replay buffers for the fast agents."""
