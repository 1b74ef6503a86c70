"""Reinforcement learning over the item space: rollouts, rewards, advantages, pairs, losses, the trainer.

`rl/trainer.py` reads top to bottom as one RL step; the losses in `rl/losses.py` return `(loss, info)`.
"""
