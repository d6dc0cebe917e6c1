"""Training: config, train state, jitted/pmapped/shard_mapped steps, orbax checkpoints, loop, search."""

from jaxseg.train.config import TrainConfig
from jaxseg.train.loop import train_and_evaluate
from jaxseg.train.step import evaluate, make_eval_step, make_train_step

__all__ = ["TrainConfig", "train_and_evaluate", "make_train_step", "make_eval_step", "evaluate"]
