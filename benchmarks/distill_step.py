"""What distillation costs a training step on the CPU: the same student step with and without a
teacher, alternating step by step in one process, and the teacher's forward alone.

    .venv/bin/python benchmarks/distill_step.py                       # rtv4_hgnetv2_s at 640, batch 2
    .venv/bin/python benchmarks/distill_step.py --size 320 --steps 8

Teachers: `dinov3_vitb16` is RT-DETRv4's (DINOv3 ViT-B/16, 4 registers, built from its
architecture with random weights: the cost does not depend on the values; at 640 it sees the
batch pooled to 320x320, 400 patch tokens); `deim_hgnetv2_l` is a larger detector of ours
(self-distillation: backbone, input projections and AIFI). The step: forward, criterion (and the
distillation term), backward, clipping, AdamW (student and projector). Medians after 2 warm-up
steps. Prints a table and writes benchmarks/results/distill_step.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def vitb16_teacher():
    """DINOv3 ViT-B/16's architecture (768 wide, 12 layers and heads, 3072 MLP, 4 registers)."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    from rtdetr.train.teachers import HFTeacher
    cfg = DINOv3ViTConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                          patch_size=16, num_register_tokens=4)
    return HFTeacher(DINOv3ViTModel(cfg), "dinov3_vitb16 architecture, random weights").freeze()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="rtv4_hgnetv2_s")
    ap.add_argument("--teachers", nargs="+", default=["dinov3_vitb16", "deim_hgnetv2_l"])
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6, help="timed steps of each kind, after 2 warm-up")
    args = ap.parse_args()

    import rtdetr
    from rtdetr.core.cpu import cpu_capabilities
    from rtdetr.core.memory import reuse_large_allocations
    from rtdetr.train import HungarianMatcher, RTDETRCriterion
    from rtdetr.train.distill import cosine_distill_loss, make_projector
    from rtdetr.train.recipes import get_recipe, make_optimizer
    from rtdetr.train.step import outputs_to_float
    from rtdetr.train.teachers import load_teacher

    reuse_large_allocations()
    torch.manual_seed(0)
    model = rtdetr.create_model(args.model).train()
    recipe = get_recipe(args.model)
    criterion = RTDETRCriterion(80, HungarianMatcher(), weight_dict=recipe.loss_weights, gamma=recipe.loss_gamma,
                                losses=recipe.losses, use_union_set=recipe.loss_union_set)
    teachers = {name: vitb16_teacher() if name == "dinov3_vitb16" else
                load_teacher(rtdetr.create_model(name)) for name in args.teachers}
    projectors = {name: make_projector(model.encoder.hidden_dim, t.dim) for name, t in teachers.items()}
    params = list(model.parameters()) + [p for pr in projectors.values() for p in pr.parameters()]
    optimizer = make_optimizer(model, recipe)
    optimizer.add_param_group({"params": [p for pr in projectors.values() for p in pr.parameters()]})
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g)
    targets = [{"labels": torch.randint(0, 80, (6,), generator=g),
                "boxes": torch.cat([torch.rand(6, 2, generator=g) * 0.6 + 0.2,
                                    torch.rand(6, 2, generator=g) * 0.3 + 0.05], 1)} for _ in range(args.batch)]

    def step(teacher: str | None) -> tuple[float, float]:
        t0 = time.perf_counter()
        out = outputs_to_float(model(x, targets=targets))
        loss = sum(criterion(out, targets).values())
        t_teacher = 0.0
        if teacher is not None:
            t1 = time.perf_counter()
            target = teachers[teacher](x, tuple(out["aifi"].shape[-2:]))
            t_teacher = time.perf_counter() - t1
            loss = loss + 5.0 * cosine_distill_loss(out["aifi"], target, projectors[teacher])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        optimizer.step()
        return time.perf_counter() - t0, t_teacher

    kinds = [None] + list(args.teachers)
    times: dict = {k: [] for k in kinds}
    for i in range(args.steps + 2):
        for k in kinds:  # alternating: the machine's load falls on every kind alike
            t = step(k)
            if i >= 2:
                times[k].append(t)
    base = statistics.median(s for s, _ in times[None])
    rows = []
    for k in kinds:
        step_s = statistics.median(s for s, _ in times[k])
        teacher_s = statistics.median(t for _, t in times[k])
        rows.append({"teacher": k or "none", "step_s": step_s, "teacher_forward_s": teacher_s, "ratio": step_s / base,
                     "teacher_params_m": sum(p.numel() for p in teachers[k].parameters()) / 1e6 if k else 0.0})
    cpu = cpu_capabilities().summary()
    print(f"{args.model} at {args.size}x{args.size}, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} alternating steps each; {cpu}")
    print(f"{'teacher':<16} {'params M':>8} {'step s':>7} {'x no teacher':>12} {'teacher fwd s':>13}")
    for r in rows:
        print(f"{r['teacher']:<16} {r['teacher_params_m']:>8.1f} {r['step_s']:>7.2f} {r['ratio']:>12.2f} "
              f"{r['teacher_forward_s']:>13.2f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "distill_step.json"
    out.write_text(json.dumps({"model": args.model, "size": args.size, "batch": args.batch, "cpu": cpu,
                               "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
