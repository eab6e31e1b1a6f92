"""When a run ends before its epochs: the time budget (`TrainConfig.time`) and early stopping
(`patience`, `min_delta`). Pure functions of the trainer's counters, so a resume decides alike."""
from __future__ import annotations


def planned_epochs(train_seconds: float, epochs_done: int, budget_hours: float, planned: int) -> int:
    """The epochs that fit the budget at the mean epoch time so far, never fewer than those done
    (`planned`, the current plan, while no time is measured)."""
    mean = train_seconds / max(1, epochs_done)
    return max(epochs_done, int(budget_hours * 3600 // mean)) if mean > 0 else planned


def over_budget(train_seconds: float, epoch_seconds: float, budget_hours: float | None) -> bool:
    """Whether the finished epochs plus this one so far have spent the budget (None: no budget)."""
    return budget_hours is not None and train_seconds + epoch_seconds > budget_hours * 3600


def record_validation(state: dict, ap: float, epoch: int, min_delta: float, patience: int | None) -> tuple[bool, bool]:
    """Count a validation AP50:95 in the trainer's `state` (best_ap, best_epoch, bad_epochs);
    returns (improved by more than `min_delta`, early stopping says stop).

    An undefined AP (COCO's -1: a validation split without objects) counts neither way: it is
    no improvement (it must not become the best), and no bad epoch either (nothing was
    measured, so early stopping has no evidence to stop on)."""
    if ap < 0:
        return False, False
    improved = state["best_ap"] is None or ap > state["best_ap"] + min_delta
    if improved:
        state["best_ap"], state["best_epoch"], state["bad_epochs"] = ap, epoch, 0
    else:
        state["bad_epochs"] += 1
    return improved, patience is not None and state["bad_epochs"] >= patience
