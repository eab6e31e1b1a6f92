"""The built-in demo: a small RT-DETRv2 that learns the synthetic shapes data set on a CPU
in minutes (the zoo's `demo` architecture).

    rtdetr demo                    # generate data, train, evaluate, predict, print AP
    rtdetr demo --task segment     # the same with instance masks (the `demo_seg` architecture)
"""
from __future__ import annotations

import time
from pathlib import Path

# The demo's promise is about ten minutes in all on a 2-core machine, whatever its CPU: training
# gets a time budget (the epochs follow from the first epoch's time, see TrainConfig.time), the
# rest (data, evaluation, pictures) takes well under a minute.
TRAIN_MINUTES = 9.2
FIRST_PLAN_EPOCHS = 12  # the plan the first epoch's learning rate follows, before one is measured
TASK_MODELS = {"detect": "demo", "segment": "demo_seg"}
# A segmentation epoch costs more (the mask head, its losses, mask evaluation): at 192 the demo's
# 9.2 minutes held 7 epochs, too few for the detector to stop duplicating its boxes (mask AP50
# 0.52); at 160, 12 of about 43 s fit, and the masks pass 0.6 AP50 from the 6th (mask AP50
# 0.68 at the 12th: benchmarks/demo.py --task segment).
TASK_SIZES = {"detect": 224, "segment": 160}


def run_demo(out: str | Path = "runs/demo", seed: int = 0, num_train: int = 300, num_val: int = 60,
             epochs: int | None = None, minutes: float | None = None, imgsz: int | None = None, batch: int = 8,
             workers: int = 1, task: str = "detect") -> dict:
    """Generate the synthetic shapes, train the demo model on the CPU, evaluate it, and save
    annotated predictions of the validation images. Returns the numbers it printed.

    minutes: training time budget; epochs: a fixed number of epochs instead. Neither given:
    TRAIN_MINUTES; both: the budget plans the epochs and `epochs` is the first epoch's plan.
    task: "detect" (boxes) or "segment" (boxes and instance masks; mask AP is printed too).
    imgsz: the training and prediction size (default: the task's, `TASK_SIZES`).
    """
    if task not in TASK_MODELS:
        raise ValueError(f"task must be one of {', '.join(TASK_MODELS)}, got {task!r}")
    imgsz = imgsz or TASK_SIZES[task]
    if epochs is None and minutes is None:
        minutes = TRAIN_MINUTES
    budget = None if minutes is None else minutes / 60
    from rtdetr.api import load_model
    from rtdetr.data import make_synthetic_dataset
    from rtdetr.predict import predict
    from rtdetr.train.trainer import train

    out = Path(out)
    started = time.time()
    data = make_synthetic_dataset(out / "data", seed=seed, num_train=num_train, num_val=num_val)
    print(f"data: {num_train} training and {num_val} validation images in {data}")
    result = train(data=str(data), model=TASK_MODELS[task], epochs=epochs or FIRST_PLAN_EPOCHS, time=budget, imgsz=imgsz,
                   batch=batch, lr_schedule="cosine", workers=workers, seed=seed, project=str(out), name="train",
                   exist_ok=True)
    best = result.best
    model = load_model(result.run_dir / "weights" / "best.pt")
    shown = predict(model, str(data / "val"), imgsz=imgsz, save=True, out=str(out / "predict"), progress=False)
    minutes = (time.time() - started) / 60
    print(best.table())  # with masks: per class box and mask AP
    masks = getattr(best, "segm", None)
    mask_text = f"; masks AP50 {masks.ap50:.3f}, AP50:95 {masks.ap:.3f}" if masks is not None else ""
    print(f"demo: boxes AP50 {best.ap50:.3f}, AP50:95 {best.ap:.3f}{mask_text} on {num_val} validation images "
          f"after {result.epochs_run} epochs, {minutes:.1f} min in all")
    print(f"annotated validation images: {shown.save_dir}")
    numbers = {"ap50": best.ap50, "ap": best.ap, "minutes": minutes, "epochs": result.epochs_run,
               "run_dir": str(result.run_dir), "predictions": str(shown.save_dir)}
    if masks is not None:
        numbers.update(mask_ap50=masks.ap50, mask_ap=masks.ap)
    return numbers
