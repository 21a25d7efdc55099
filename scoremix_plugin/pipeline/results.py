"""What each built-in stage returns: frozen dataclasses, stored as JSON in the stage's marker.

A later stage reads an earlier one's result with ``ctx.result("data")`` and gets the dataclass back, so
a misspelt field fails where it is written, not deep inside a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DataResult:
    rec: str  # the real InsightFace folder (train.rec / train.idx / property)
    num_classes: int
    num_image: int
    bins: dict[str, str]  # verification target -> .bin path
    toy: bool  # the embedded toy dataset (else a user's folder)


@dataclass(frozen=True)
class RecogniserResult:
    config: str  # the config file written for this run (rerunnable with `scoremix train`)
    model: str  # model.pt
    network: str
    num_classes: int
    num_image: int
    num_epoch: int | None
    global_step: int | None
    image_degrade: int | None


@dataclass(frozen=True)
class GeneratorResult:
    checkpoint: str  # what generation samples with (the post-hoc EMA reconstruction when one was asked for)
    step: int
    num_classes: int
    final_loss: float
    stopped_early: bool
    trained: bool = True  # False: recipe.generator named a checkpoint trained elsewhere
    sigma_rel: float | None = None  # post-hoc EMA length of ``checkpoint`` (None: the run's own EMA)
    guide: str | None = None  # autoguidance guide checkpoint (None: no guide)
    guide_kind: str | None = None  # "snapshot" | "smaller" | "checkpoint"
    guide_step: int | None = None
    pretrained: str | None = None  # the shipped generator's name (recipe.generator = "pretrained:NAME")
    sha256: str | None = None  # its weights' sha256, as its provenance records and the stage checked


@dataclass(frozen=True)
class CentresResult:
    onnx: str  # the baseline exported to ONNX
    embedding: str  # centres file per space
    condition: str
    head: str | None = None  # None when the baseline left no head checkpoint

    def path(self, space: str) -> str:
        """The centres file of a selection space ("embedding", "head" or "condition")."""
        found = {"embedding": self.embedding, "condition": self.condition, "head": self.head}.get(space)
        if found is None:
            have = [s for s in ("embedding", "head", "condition") if getattr(self, s)]
            from scoremix_plugin.pipeline.runner import PipelineError

            raise PipelineError(f"recipe.selection.space {space!r}: no such centres file (available: {have})")
        return found


@dataclass(frozen=True)
class SelectResult:
    pairs: str  # pairs CSV
    num_identities: int
    strategy: str
    space: str
    distance_mean: float
    distance_min: float
    distance_max: float


@dataclass(frozen=True)
class GenerateResult:
    manifest: str
    num_synthetic_classes: int
    num_synthetic_images: int


@dataclass(frozen=True)
class DatasetReportResult:
    report: str  # DIR/dataset_report/report.md (+ report.json and figures beside it)
    json: str
    headline: dict[str, Any]  # EER / FNMR@FMR / d' / FDR of the synthetic and the real set, leak counts, gate
    gate_passed: bool | None  # None: no verdict (no synthetic identities to judge)
    gate: str  # the verdict in words, with what to change when it failed


@dataclass(frozen=True)
class MergeResult:
    folder: str
    config: str | None
    num_classes: int | None
    num_image: int | None


@dataclass(frozen=True)
class VerifyResult:
    accuracy: dict[str, dict[str, float]]  # run -> target -> mean accuracy over folds
    accuracy_std: dict[str, dict[str, float]]
    roc: str
    json: str
    markdown: str
    # IJB target -> {"far": [...], "baseline": {mode: numbers}, "scoremix": {...}, report files}; {} without IJB
    ijb: dict[str, dict[str, Any]] = field(default_factory=dict)
    # TinyFace: {"baseline": TinyFaceResult.to_dict(), "scoremix": ..., report files}; {} without TinyFace
    tinyface: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AlignResult:
    json: str
    png: str
    num_matched: int | None = None
    linear_cka: float | None = None
    linear_cka_shuffled: float | None = None
    rbf_cka: float | None = None
    rbf_cka_shuffled: float | None = None
    mutual_knn: float | None = None
    mutual_knn_shuffled: float | None = None


@dataclass(frozen=True)
class ReportResult:
    report: str
    json: str
