"""The one trainer (:mod:`.trainer`), with its rooms: what differs between a stack's runs (:mod:`.runs`), the
inputs (:mod:`.inputs`), the update (:mod:`.optimizer`), the captured CUDA step (:mod:`.capture`), the fused 2-D
engine (:mod:`.fused`), stacks side by side (:mod:`.side_by_side`) and the per-epoch loop with its checkpoints
(:mod:`.fit`)."""

from ..losses import LossSpec
from .fit import Checkpoint, fit_table, read_checkpoint
from .inputs import CIFAR_MEAN, CIFAR_STD, normalization_constants, normalize, to_device_images
from .optimizer import StackedSGD
from .runs import EpochStats, StackedRuns
from .side_by_side import SideBySide, train_side_by_side
from .trainer import Trainer

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "Checkpoint", "EpochStats", "LossSpec", "SideBySide", "StackedRuns",
           "StackedSGD", "Trainer", "fit_table", "normalization_constants", "normalize", "read_checkpoint",
           "to_device_images", "train_side_by_side"]
