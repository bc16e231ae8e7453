"""mmrl's environments (installed as ``mmrl.envs``)."""
