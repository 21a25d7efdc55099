"""Sizes and time budgets of the GPU check: one place for the GPU run and the CPU smoke run (CI)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

PARTS = ("data", "env", "tests", "generator", "recogniser", "host", "loader")

# Seconds per part; scaled to the total budget (--budget), and whatever a part leaves unused goes to
# the next. The GPU total (470 s) keeps the whole check, with start-up, under 8 minutes.
BUDGETS_S = {
    "gpu": {"data": 30, "env": 25, "tests": 75, "generator": 195, "recogniser": 40, "host": 70, "loader": 20},
    "smoke": {"data": 15, "env": 10, "tests": 30, "generator": 25, "recogniser": 15, "host": 10, "loader": 15},
}


@dataclass
class Settings:
    smoke: bool
    device: str
    # data: the toy identity folder every part reads (112 px, as the recogniser and the host need)
    data_identities: int
    data_images_per_identity: int
    # env: the card's peak, measured with one large square matmul
    peak_size: int
    peak_dtype: str
    # generator
    presets: list[str]
    num_classes: int  # classes of the (untrained) networks timed: speed does not depend on the weights
    train_batches: list[int]  # tried largest first; the first that fits a bf16 training step is used
    train_steps: int
    sampler_steps: int  # Heun steps (EDM's 32 at 112 px on the GPU)
    sampler_batch: int  # images per sample() call
    variants: list[str]  # eager is the baseline; the others where they apply
    bf16: bool  # the generator under bf16 autocast (GPU); the smoke run stays fp32 (bf16 convs are slow on CPUs)
    measure_seconds: float  # how long a raw training-step variant is timed (after its warm-up)
    # recogniser (ours and the host's)
    network: str
    rec_batch: int
    rec_steps: int
    rec_workers: int
    fp16: bool
    # loader
    loader_batch: int
    loader_workers: list[int]
    loader_seconds: float
    host: str | None = None
    keep_work: bool = False
    work_root: str | None = None
    peak_tflops: float | None = None  # filled in by the env part for the later ones
    extra: dict = field(default_factory=dict)

    @classmethod
    def for_mode(
        cls, *, smoke: bool, presets: str | None = None, host: str | None = None, keep_work: bool = False
    ) -> Settings:
        chosen = [p for p in presets.split(",") if p] if presets else (["test-micro"] if smoke else gpu_presets())
        if smoke:
            return cls(
                smoke=True,
                device="cpu",
                data_identities=6,
                data_images_per_identity=4,
                peak_size=256,
                peak_dtype="float32",
                presets=chosen,
                num_classes=6,
                train_batches=[4],
                train_steps=3,
                sampler_steps=2,
                sampler_batch=2,
                variants=["eager", "channels_last"],
                measure_seconds=0.2,
                bf16=False,
                network="r10_tiny",
                rec_batch=4,
                rec_steps=3,
                rec_workers=0,
                fp16=False,
                loader_batch=4,
                loader_workers=[0],
                loader_seconds=0.5,
                host=host,
                keep_work=keep_work,
            )
        return cls(
            smoke=False,
            device="cuda",
            data_identities=40,
            data_images_per_identity=32,
            peak_size=8192,
            peak_dtype="bfloat16",
            presets=chosen,
            num_classes=1000,
            train_batches=[256, 128, 64, 32],
            train_steps=60,
            sampler_steps=32,
            sampler_batch=64,
            variants=["eager", "channels_last", "compile", "cuda_graphs"],
            measure_seconds=5.0,
            bf16=True,
            network="r50",
            rec_batch=128,
            rec_steps=200,
            rec_workers=8,
            fp16=True,
            loader_batch=128,
            loader_workers=[0, 2, 4, 8],
            loader_seconds=4.0,
            host=host,
            keep_work=keep_work,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Settings:
        return cls(**json.loads(text))


def gpu_presets(resolution: int = 112) -> list[str]:
    """Every generator preset of the registry designed for ``resolution`` px (new presets join by themselves)."""
    from scoremix_plugin.generation.network import PRESETS

    return [name for name, kw in PRESETS.items() if int(kw.get("resolution", 0)) == resolution]
