"""Fine-tuning a COCO checkpoint to other classes: class-dependent layers start afresh, except
the rows of classes whose names are COCO's, which keep what they learnt."""
from __future__ import annotations

import torch

CLASS_KEYS = ("decoder.enc_score_head.", "decoder.dec_score_head.", "decoder.denoising_class_embed.")


def is_class_dependent(key: str) -> bool:
    return key.startswith(CLASS_KEYS)


def adapt_class_layers(sd: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor],
                       old_names: list[str], new_names: list[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Replace the class-dependent entries of `sd` by `fresh` ones (a new model's initial values),
    copying over the rows of classes present in both name lists (matched case-insensitively).

    Class rows: dim 0 of score-head weights and biases; the denoising embedding has one extra
    padding row at the end, which stays fresh. Returns the new state dict and the kept names.
    """
    old_index = {n.lower(): i for i, n in enumerate(old_names)}
    pairs = [(new_i, old_index[n.lower()]) for new_i, n in enumerate(new_names) if n.lower() in old_index]
    out = dict(sd)
    for key, value in fresh.items():
        if not is_class_dependent(key):
            continue
        merged = value.clone()
        old = sd.get(key)
        if old is not None:
            for new_i, old_i in pairs:
                merged[new_i] = old[old_i]
        out[key] = merged
    return out, [new_names[i] for i, _ in pairs]
