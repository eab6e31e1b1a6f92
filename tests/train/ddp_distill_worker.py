"""Run by tests/train/test_distill.py under torchrun: a short distilled run; each process writes
its distillation state and projector to rank<r>.pt."""
import sys
from pathlib import Path

import torch

from rtdetr.core import distributed as dist
from rtdetr.train.config import TrainConfig
from rtdetr.train.distill import PROJECTOR
from rtdetr.train.trainer import Trainer
from tests.train.test_distill import SMALL

if __name__ == "__main__":
    data, project, teacher = sys.argv[1:4]
    kw = dict(SMALL, batch=2)
    trainer = Trainer(TrainConfig.from_kwargs(data=data, project=project, name="ddp", epochs=2, teacher=teacher, **kw))
    trainer.fit()
    torch.save({"distillation": trainer.distillation.state_dict(),
                "projector": trainer.extra_modules[PROJECTOR].state_dict()},
               Path(project) / f"rank{dist.rank()}.pt")
