"""Margin softmax losses (the host's CombinedMarginLoss) and the class-weight head (PartialFC-like).

The head holds one weight row per class: the class "centres" that ``scoremix embed --checkpoint``
exports. With several processes it is model-parallel like the host's PartialFC_V2 at sample_rate 1:
each rank holds a contiguous slice of the classes, embeddings are all-gathered, and the softmax
cross-entropy is computed across ranks (max and denominator all-reduced), so no rank ever holds
the full ``[num_classes, D]`` matrix or the full logits.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.functional import linear, normalize

from scoremix_plugin.errors import InputError


class CombinedMarginLoss(nn.Module):
    """Margin on the target cosine, then scale: ArcFace ``cos(theta + m2)`` or CosFace ``cos(theta) - m3``.

    ``margin_list = (m1, m2, m3)`` as in the host's configs: ``(1.0, 0.5, 0.0)`` ArcFace,
    ``(1.0, 0.0, 0.4)`` CosFace. Input: cosines ``[N, C]`` in ``[-1, 1]`` and labels ``[N]`` (column of
    the target, or -1 where the target class lives on another rank). Returns the scaled logits.

    As in the host, the margin is applied to the VALUES only: the gradient flows through as if the
    margin were not there (the host computes it in place under ``no_grad``). This avoids the
    ``1/sin(theta)`` blow-up of d/dcos[arccos] near cos = +-1 and keeps our training dynamics the host's.
    """

    def __init__(
        self,
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
        interclass_filtering_threshold: float = 0.0,
    ):
        super().__init__()
        if m1 != 1.0:
            raise InputError(f"margin_list m1={m1}: only m1 = 1.0 is supported (ArcFace or CosFace), like the host")
        if m3 > 0 and m2 != 0:
            raise InputError(
                f"margin_list ({m1}, {m2}, {m3}): combining an angular m2 and an additive m3 is not supported; "
                "the host would silently ignore m2 (use (1.0, 0.5, 0.0) ArcFace or (1.0, 0.0, 0.4) CosFace)"
            )
        if m2 < 0 or m3 < 0:
            raise InputError(f"margin_list ({m1}, {m2}, {m3}): margins must be >= 0")
        self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)
        self.interclass_filtering_threshold = float(interclass_filtering_threshold)

    @property
    def kind(self) -> str:
        return "cosface" if self.m3 > 0 else "arcface"

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        rows = torch.where(labels != -1)[0]
        cols = labels[rows]
        if self.interclass_filtering_threshold > 0:
            # Non-target classes that look MORE similar than the threshold are likely label noise
            # (the same person under two labels): drop them from the softmax by zeroing their cosine.
            with torch.no_grad():
                keep = (cosine <= self.interclass_filtering_threshold).to(cosine.dtype)
                keep[rows, cols] = 1.0
            cosine = cosine * keep
        target = cosine[rows, cols]
        with torch.no_grad():
            if self.kind == "arcface":
                marginal = torch.cos(torch.arccos(target.clamp(-1.0, 1.0)) + self.m2)
            else:
                marginal = target - self.m3
            shift = torch.zeros_like(cosine)
            shift[rows, cols] = marginal - target
        # Straight-through: the values carry the margin, the gradient is the identity (see class docstring).
        return (cosine + shift) * self.s


def class_slice(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """(first class, number of classes) held by ``rank``: contiguous, the first ``C % world`` ranks get one more."""
    num_local = num_classes // world_size + int(rank < num_classes % world_size)
    start = num_classes // world_size * rank + min(rank, num_classes % world_size)
    return start, num_local


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate every rank's ``[B, D]`` embeddings; the backward returns this rank's rows of the summed grads."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.batch, ctx.rank, ctx.world = x.shape[0], dist.get_rank(), world
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # Every rank's class slice contributes gradient to every embedding: sum them. all_reduce rather
        # than reduce_scatter because gloo (CPU) has no reduce_scatter.
        grad = grad.contiguous()
        dist.all_reduce(grad, dist.ReduceOp.SUM)
        mine = grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]
        # DDP averages the backbone's gradients over ranks; the loss is already the global-batch mean,
        # so undo that average here (the host does the same).
        return mine * ctx.world


class _DistSoftmaxCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy where the class dimension is split across ranks."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, distributed: bool) -> torch.Tensor:
        n = logits.shape[0]
        with torch.no_grad():
            max_logit = logits.max(dim=1, keepdim=True).values
            if distributed:
                dist.all_reduce(max_logit, dist.ReduceOp.MAX)
            probs = (logits - max_logit).exp_()
            denom = probs.sum(dim=1, keepdim=True)
            if distributed:
                dist.all_reduce(denom, dist.ReduceOp.SUM)
            probs.div_(denom)
            rows = torch.where(labels != -1)[0]
            p_target = torch.zeros(n, device=logits.device, dtype=probs.dtype)
            p_target[rows] = probs[rows, labels[rows]]
            if distributed:
                dist.all_reduce(p_target, dist.ReduceOp.SUM)
        ctx.save_for_backward(probs, rows, labels)
        return -p_target.clamp_min(1e-30).log().mean()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        probs, rows, labels = ctx.saved_tensors
        grad = probs.clone()
        grad[rows, labels[rows]] -= 1.0
        grad.mul_(grad_out / probs.shape[0])
        return grad, None, None


class MarginSoftmaxHead(nn.Module):
    """Class weights (this rank's slice) + margin softmax cross-entropy over the global batch.

    ``weight`` is ``[num_local, D]`` (the host's PartialFC_V2 ``state_dict_softmax_fc`` has the same single
    key, so a host checkpoint's head loads). Initial weights are N(0, 0.01) drawn from ``seed`` for the FULL
    matrix, so the initial head does not depend on the number of processes.
    """

    def __init__(
        self,
        margin_loss: CombinedMarginLoss,
        embedding_size: int,
        num_classes: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        fp16: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        self.margin_loss = margin_loss
        self.embedding_size, self.num_classes = int(embedding_size), int(num_classes)
        self.rank, self.world_size, self.fp16 = rank, world_size, bool(fp16)
        self.class_start, self.num_local = class_slice(num_classes, rank, world_size)
        if self.num_local == 0:
            raise InputError(f"num_classes={num_classes} < world size {world_size}: rank {rank} would hold no class")
        self.weight = nn.Parameter(self._init_slice(seed))

    def _init_slice(self, seed: int, chunk: int = 1 << 16) -> torch.Tensor:
        # Draw the full matrix chunk by chunk with one generator and keep our rows: same values for any
        # world size, without materialising [num_classes, D] at once.
        g = torch.Generator().manual_seed(int(seed))
        out = torch.empty(self.num_local, self.embedding_size)
        lo, hi = self.class_start, self.class_start + self.num_local
        for first in range(0, hi, chunk):
            rows = torch.normal(0.0, 0.01, (min(chunk, self.num_classes - first), self.embedding_size), generator=g)
            a, b = max(lo, first), min(hi, first + rows.shape[0])
            if a < b:
                out[a - lo : b - lo] = rows[a - first : b - first]
        return out

    def extra_repr(self) -> str:
        return (
            f"classes [{self.class_start}, {self.class_start + self.num_local}) of {self.num_classes}, "
            f"D={self.embedding_size}, {self.margin_loss.kind} s={self.margin_loss.s}"
        )

    def forward(self, local_embeddings: torch.Tensor, local_labels: torch.Tensor) -> torch.Tensor:
        local_labels = local_labels.reshape(-1).long()
        lo_hi = torch.stack([local_labels.min(), local_labels.max()]).tolist()
        if lo_hi[0] < 0 or lo_hi[1] >= self.num_classes:
            raise InputError(f"labels out of range: min {lo_hi[0]}, max {lo_hi[1]}; num_classes is {self.num_classes}")
        distributed = self.world_size > 1
        if distributed:
            embeddings = _AllGatherWithGrad.apply(local_embeddings)
            parts = [torch.empty_like(local_labels) for _ in range(self.world_size)]
            dist.all_gather(parts, local_labels)
            labels = torch.cat(parts)
        else:
            embeddings, labels = local_embeddings, local_labels
        mine = (labels >= self.class_start) & (labels < self.class_start + self.num_local)
        labels = torch.where(mine, labels - self.class_start, torch.full_like(labels, -1))
        amp = self.fp16 and embeddings.device.type == "cuda"
        with torch.autocast(device_type=embeddings.device.type, dtype=torch.float16, enabled=amp):
            cosine = linear(normalize(embeddings), normalize(self.weight))
        cosine = cosine.float().clamp(-1.0, 1.0)
        logits = self.margin_loss(cosine, labels)
        return _DistSoftmaxCrossEntropy.apply(logits, labels, distributed)


def margin_loss_from_config(
    margin_list, interclass_filtering_threshold: float = 0.0, s: float = 64.0
) -> CombinedMarginLoss:
    """The host's ``CombinedMarginLoss(64, *margin_list, threshold)``."""
    if len(margin_list) != 3:
        raise InputError(f"config.margin_list must be (m1, m2, m3), got {margin_list!r}")
    m1, m2, m3 = (float(v) for v in margin_list)
    if not all(math.isfinite(v) for v in (m1, m2, m3)):
        raise InputError(f"config.margin_list must be finite, got {margin_list!r}")
    return CombinedMarginLoss(s, m1, m2, m3, interclass_filtering_threshold)
