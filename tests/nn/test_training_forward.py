"""Training-mode outputs: every layer's predictions, the encoder's, and contrastive denoising."""
from __future__ import annotations

import torch

import rtdetr
from rtdetr.models.nn.denoising import build_denoising_groups
from rtdetr.train import HungarianMatcher, RTDETRCriterion


def targets_of(*counts: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for n in counts:
        cxcy = torch.rand(n, 2, generator=g) * 0.5 + 0.25
        wh = torch.rand(n, 2, generator=g) * 0.2 + 0.05
        out.append({"labels": torch.randint(0, 3, (n,), generator=g), "boxes": torch.cat([cxcy, wh], 1)})
    return out


def test_denoising_layout_and_attention_mask_by_hand():
    torch.manual_seed(0)
    embed = torch.nn.Embedding(4, 8, padding_idx=3)
    dn = build_denoising_groups(targets_of(2, 1), num_classes=3, num_queries=5, class_embed=embed,
                                num_denoising=6, label_noise_ratio=0.0, box_noise_scale=0.0)
    # max 2 objects -> 6 // 2 = 3 groups of (2 positives + 2 negatives) = 12 denoising queries.
    assert dn.meta["dn_num_group"] == 3 and dn.meta["dn_num_split"] == [12, 5]
    assert dn.meta["dn_positive_idx"][0].tolist() == [0, 1, 4, 5, 8, 9]
    assert dn.meta["dn_positive_idx"][1].tolist() == [0, 4, 8]
    m = dn.attn_mask
    assert m.shape == (17, 17)
    for q in range(17):
        for k in range(17):
            if q >= 12:
                blocked = k < 12  # matching queries never see denoising queries
            else:
                blocked = k < 12 and q // 4 != k // 4  # groups of 4 see only themselves (and the matching queries)
            assert bool(m[q, k]) == blocked, (q, k)
    # Without noise, positives reproduce their boxes and the padding slot gets the padding embedding.
    assert torch.allclose(dn.ref_unact[1, 0].sigmoid(), targets_of(2, 1)[1]["boxes"][0], atol=1e-5)
    assert torch.equal(dn.content[1, 1], embed.weight[3])


def test_box_noise_keeps_positives_closer_than_negatives():
    torch.manual_seed(0)
    t = targets_of(5)
    dn = build_denoising_groups(t, 3, 10, torch.nn.Embedding(4, 8, padding_idx=3), num_denoising=100,
                                label_noise_ratio=0.5, box_noise_scale=1.0)
    boxes = dn.ref_unact.sigmoid()[0].reshape(-1, 2, 5, 4)  # groups, pos/neg, objects, cxcywh
    gt = t[0]["boxes"]
    err = (boxes - gt).abs().amax(-1)
    assert (err[:, 0] <= err[:, 1] + 1e-6).float().mean() > 0.9


def test_train_outputs_feed_the_criterion_and_reach_every_parameter():
    torch.manual_seed(0)
    model = rtdetr.create_model("rtdetrv2_r18vd", num_classes=3).train()
    criterion = RTDETRCriterion(3, HungarianMatcher())
    x = torch.rand(2, 3, 160, 160)
    for targets in (targets_of(2, 1), targets_of(0, 0)):  # an all-empty batch must work too
        out = model(x, targets=targets)
        assert len(out["aux_outputs"]) == 2 and len(out["enc_aux_outputs"]) == 1
        assert len(out["dn_aux_outputs"]) == 3
        assert out["pred_logits"].shape == (2, 300, 3)
        losses = criterion(out, targets)
        assert len(losses) == 21 and all(torch.isfinite(v) for v in losses.values())
        model.zero_grad()
        sum(losses.values()).backward()
        # Every trainable parameter takes part in the graph (DDP without find_unused_parameters).
        assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_train_mode_without_targets_has_no_denoising():
    model = rtdetr.create_model("rtdetrv2_r18vd", num_classes=3).train()
    out = model(torch.rand(1, 3, 160, 160))
    assert "dn_meta" not in out and out["pred_logits"].shape == (1, 300, 3)
