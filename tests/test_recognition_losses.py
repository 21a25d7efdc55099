"""Margin losses and the class-weight head: values against the formulas, and the 2-rank sharded head
(gloo, two real processes) against the single-process head."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F

from scoremix_plugin.recognition.losses import CombinedMarginLoss, MarginSoftmaxHead, class_slice


def test_arcface_and_cosface_values():
    cos = torch.tensor([[0.8, 0.1, -0.3], [0.2, 0.6, 0.0]])
    labels = torch.tensor([0, 2])
    arc = CombinedMarginLoss(64, 1.0, 0.5, 0.0)(cos.clone(), labels)
    assert arc[0, 0].item() == pytest.approx(64 * math.cos(math.acos(0.8) + 0.5), rel=1e-5)
    assert arc[1, 2].item() == pytest.approx(64 * math.cos(math.pi / 2 + 0.5), rel=1e-5)
    assert arc[0, 1].item() == pytest.approx(64 * 0.1, rel=1e-6)
    cosf = CombinedMarginLoss(64, 1.0, 0.0, 0.4)(cos.clone(), labels)
    assert cosf[1, 2].item() == pytest.approx(64 * -0.4, rel=1e-6)
    # -1: the target lives on another rank, so the row is untouched
    other = CombinedMarginLoss(64, 1.0, 0.5, 0.0)(cos.clone(), torch.tensor([-1, 1]))
    assert torch.allclose(other[0], 64 * cos[0])


def test_margin_gradient_is_straight_through_like_the_host():
    cos = torch.tensor([[0.8, 0.1, -0.3]], requires_grad=True)
    CombinedMarginLoss(64, 1.0, 0.5, 0.0)(cos, torch.tensor([0])).sum().backward()
    assert torch.allclose(cos.grad, torch.full_like(cos, 64.0))


def test_interclass_filtering_zeroes_too_similar_non_targets():
    cos = torch.tensor([[0.9, 0.5, 0.1]])
    out = CombinedMarginLoss(1, 1.0, 0.0, 0.4, interclass_filtering_threshold=0.3)(cos, torch.tensor([0]))
    assert out.tolist()[0] == pytest.approx([0.5, 0.0, 0.1])


def test_bad_margins_are_rejected():
    with pytest.raises(ValueError, match="m1"):
        CombinedMarginLoss(64, 1.35, 0.0, 0.0)
    with pytest.raises(ValueError, match="m2"):
        CombinedMarginLoss(64, 1.0, 0.5, 0.4)


def test_single_process_head_is_margin_cross_entropy():
    torch.manual_seed(0)
    head = MarginSoftmaxHead(CombinedMarginLoss(64, 1.0, 0.5, 0.0), 16, 7, seed=3)
    emb = torch.randn(5, 16, requires_grad=True)
    labels = torch.tensor([0, 3, 6, 3, 1])
    loss = head(emb, labels)
    loss.backward()
    cos = F.linear(F.normalize(emb), F.normalize(head.weight)).clamp(-1, 1)
    ref = F.cross_entropy(CombinedMarginLoss(64, 1.0, 0.5, 0.0)(cos, labels), labels)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        head(emb, torch.tensor([0, 1, 2, 7, 0]))


def test_class_slices_cover_every_class_once():
    for c, w in [(7, 2), (10, 3), (5, 5)]:
        slices = [class_slice(c, r, w) for r in range(w)]
        assert [s for s, _ in slices] == [sum(n for _, n in slices[:r]) for r in range(w)]
        assert sum(n for _, n in slices) == c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sharded_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    emb_all = torch.randn(2 * 4, 16)
    labels_all = torch.tensor([0, 3, 6, 3, 1, 2, 5, 4])
    head = MarginSoftmaxHead(CombinedMarginLoss(64, 1.0, 0.5, 0.0), 16, 7, rank=rank, world_size=world, seed=3)
    emb = emb_all[rank * 4 : (rank + 1) * 4].clone().requires_grad_(True)
    loss = head(emb, labels_all[rank * 4 : (rank + 1) * 4])
    loss.backward()
    torch.save(
        {
            "loss": loss.detach(),
            "emb_grad": emb.grad,
            "w": head.weight.detach(),
            "w_grad": head.weight.grad,
            "start": head.class_start,
        },
        os.path.join(out_dir, f"r{rank}.pt"),
    )
    dist.destroy_process_group()


def test_two_rank_sharded_head_matches_single_process(tmp_path):
    torch.multiprocessing.spawn(_sharded_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"r{r}.pt") for r in range(2)]
    torch.manual_seed(0)
    emb_all = torch.randn(8, 16, requires_grad=True)
    labels_all = torch.tensor([0, 3, 6, 3, 1, 2, 5, 4])
    head = MarginSoftmaxHead(CombinedMarginLoss(64, 1.0, 0.5, 0.0), 16, 7, seed=3)
    loss = head(emb_all, labels_all)
    loss.backward()
    # The initial head does not depend on the world size; each rank holds its slice.
    assert torch.equal(torch.cat([p["w"] for p in parts]), head.weight.detach())
    for p in parts:
        assert p["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    assert torch.allclose(torch.cat([p["w_grad"] for p in parts]), head.weight.grad, atol=1e-6)
    # Each rank's embedding gradient is world x the single-process one: DDP then averages it back.
    assert torch.allclose(torch.cat([p["emb_grad"] for p in parts]) / 2, emb_all.grad, atol=1e-6)
