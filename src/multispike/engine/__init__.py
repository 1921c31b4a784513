"""Training, evaluation, checkpoints, distributed set-up and recipes."""

from multispike.engine.checkpoint import load_checkpoint, load_model, save_checkpoint
from multispike.engine.config import (
    TrainConfig,
    list_recipes,
    load_recipe,
    resolve_config,
    resume_config,
)
from multispike.engine.evaluate import evaluate_model, parse_timesteps
from multispike.engine.runlock import RunLocked, run_lock
from multispike.engine.train import TrainingDiverged, train_model

__all__ = [
    "TrainConfig",
    "TrainingDiverged",
    "evaluate_model",
    "list_recipes",
    "load_checkpoint",
    "load_model",
    "load_recipe",
    "parse_timesteps",
    "resolve_config",
    "resume_config",
    "run_lock",
    "RunLocked",
    "save_checkpoint",
    "train_model",
]
