"""PPO hyperparameters for RL Baselines3 Zoo: ``--conf-file mmrl.zoo.ppo`` (the content of ``ppo.yml``)."""

from mmrl.zoo import load_hyperparams

hyperparams = load_hyperparams("ppo")
