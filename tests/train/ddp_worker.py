"""Run by tests/train/test_ddp.py under torchrun: one short training run of the test's model."""
import sys

from tests.train.test_ddp import NOISELESS_DEMO, ddp_kwargs

from rtdetr.train.trainer import train

if __name__ == "__main__":
    data, project, name, steps = sys.argv[1:5]
    train(data=data, project=project, name=name, max_steps=int(steps), **ddp_kwargs(NOISELESS_DEMO))
