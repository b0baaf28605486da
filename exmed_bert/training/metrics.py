"""Pretraining evaluation metrics, accumulated batch by batch: masked-token loss, accuracy, top-10
accuracy, the unigram-frequency top-10 baseline on the same masked positions, PLOS AUROC / AUPRC / F1 and
the PLOS reference (the patient's number of hospital stays as the score).

Masked-only logits have a different size in every batch, so we keep counts and sums, never logits.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from exmed_bert.data.vocab import FIRST_CODE_ID
from exmed_bert.evaluation.metrics import binary_metrics

TOP_K = 10


def unigram_top_ids(counts: torch.Tensor, k: int = TOP_K) -> torch.Tensor:
    """Ids of the k most frequent codes (special tokens never count). `counts` is `[V]`."""
    counts = counts.clone().double()
    counts[:FIRST_CODE_ID] = -1
    return torch.topk(counts, min(k, int((counts > 0).sum()) or 1)).indices


def code_counts(input_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Occurrences of every token id in a flat id tensor, `[V]`."""
    return torch.bincount(input_ids.reshape(-1).long(), minlength=vocab_size)[:vocab_size]


def output_field(out: Any, *names: str) -> torch.Tensor | None:
    for name in names:
        value = out.get(name) if isinstance(out, dict) else getattr(out, name, None)
        if value is not None:
            return value
    return None


def masked_logits(out: Any, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MLM logits and targets at the masked positions: `(M, V)`, `(M,)`.

    The model may return logits for masked positions only (`(M, V)`, row-major order of `labels != -100`)
    or for every position (`(B, T, V)`); both are handled.
    """
    logits = output_field(out, "prediction_logits", "mlm_logits", "logits")
    if logits is None:
        raise KeyError("the model output has no MLM logits (prediction_logits / mlm_logits / logits)")
    mask = labels != -100
    targets = labels[mask]
    if logits.dim() == 3:
        logits = logits[mask]
    if logits.shape[0] != targets.shape[0]:
        raise ValueError(f"{logits.shape[0]} MLM logit rows for {targets.shape[0]} masked tokens")
    return logits, targets


class PretrainMetrics:
    """Running sums over evaluation batches; `reduce()` sums them across DDP ranks; `compute()` gives
    the `eval_*` dict."""

    def __init__(self, unigram_ids: torch.Tensor | None = None, plos: bool = False, k: int = TOP_K,
                 plos_reference: dict[str, float] | None = None):
        self.k = k
        self.unigram_ids = unigram_ids
        self.plos = plos
        self.plos_reference = plos_reference  # `plos_reference_metrics` of the validation set: fixed per run
        # [loss*masked, masked, correct@1, correct@k, unigram correct@k, mlm CE sum, batches, loss sum]
        self.sums = torch.zeros(8, dtype=torch.float64)
        self.plos_scores: list[float] = []
        self.plos_labels: list[int] = []

    @torch.no_grad()
    def update(self, out: Any, batch: dict[str, torch.Tensor]) -> None:
        logits, targets = masked_logits(out, batch["labels"])
        m = targets.numel()
        loss = output_field(out, "loss")
        loss_value = float(loss.detach().float()) if loss is not None else float("nan")
        if m:
            logits = logits.float()
            topk = logits.topk(min(self.k, logits.shape[-1]), dim=-1).indices  # (M, k)
            hits_k = (topk == targets[:, None]).any(-1)
            hits_1 = topk[:, 0] == targets
            uni = torch.isin(targets, self.unigram_ids.to(targets.device)).sum() if self.unigram_ids is not None else 0
            ce = F.cross_entropy(logits, targets, reduction="sum")
            self.sums += torch.tensor([loss_value * m, m, float(hits_1.sum()), float(hits_k.sum()), float(uni),
                                       float(ce), 1.0, loss_value], dtype=torch.float64)
        else:
            self.sums += torch.tensor([0, 0, 0, 0, 0, 0, 1.0, loss_value], dtype=torch.float64)
        if self.plos and "plos_labels" in batch:
            scores = plos_scores(output_field(out, "plos_logits", "seq_relationship_logits"))
            if scores is not None:
                self.plos_scores += scores.tolist()
                self.plos_labels += batch["plos_labels"].reshape(-1).long().tolist()

    def reduce(self) -> None:
        """Sum counts and concatenate PLOS scores over all processes (no-op without torch.distributed)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        sums = self.sums.to(collective_device())
        dist.all_reduce(sums)  # float64 sums are exact for counts far beyond any validation set
        self.sums = sums.cpu()
        if self.plos:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (self.plos_scores, self.plos_labels))
            self.plos_scores = [s for g in gathered for s in g[0]]
            self.plos_labels = [y for g in gathered for y in g[1]]

    def compute(self, prefix: str = "eval") -> dict[str, float]:
        loss_m, m, hit1, hitk, uni, ce, batches, loss_sum = self.sums.tolist()
        out = {
            # batch losses weighted by their masked-token count, so small last batches don't skew it
            "loss": loss_m / m if m else (loss_sum / batches if batches else float("nan")),
            "mlm_loss": ce / m if m else float("nan"),
            "accuracy": hit1 / m if m else float("nan"),
            f"top{self.k}_accuracy": hitk / m if m else float("nan"),
            "masked_tokens": m,
        }
        if self.unigram_ids is not None:
            out[f"unigram_top{self.k}_accuracy"] = uni / m if m else float("nan")
        if self.plos:
            out.update(plos_metrics(self.plos_scores, self.plos_labels))
            if self.plos_reference is not None:
                out.update({f"reference_{k}": v for k, v in self.plos_reference.items()})
        return {f"{prefix}_{'plos_' if k in _PLOS_KEYS else ''}{k}": v for k, v in out.items()}


_PLOS_KEYS = ("auroc", "auprc", "f1", "prevalence", "reference_auroc", "reference_auprc")


def stay_counts(los_offsets: torch.Tensor | np.ndarray) -> np.ndarray:
    """[N] hospital stays recorded per patient, from a dataset's `los_offsets` [N+1]."""
    return np.diff(np.asarray(los_offsets, dtype=np.int64))


def plos_reference_metrics(los_offsets: torch.Tensor | np.ndarray, labels: Sequence[int]) -> dict[str, float]:
    """AUROC and AUPRC of the trivial PLOS reference: score = the patient's number of stays.

    About three patients in four have no stay, and a patient without one can never have a prolonged one,
    so "had a stay" alone ranks well (AUROC above 0.9 on generator data, where every stay also bills 99223
    into the codes the model reads). A PLOS head has learned more than "had a stay" only where it beats this.
    """
    m = plos_metrics(stay_counts(los_offsets), labels)
    return {"auroc": m["auroc"], "auprc": m["auprc"]}


def collective_device() -> torch.device:
    """NCCL reduces only GPU tensors; gloo takes CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def plos_scores(logits: torch.Tensor | None) -> torch.Tensor | None:
    """Probability of a prolonged stay per patient from `(B,)`, `(B, 1)` or `(B, 2)` logits."""
    if logits is None:
        return None
    logits = logits.detach().float()
    if logits.dim() == 2 and logits.shape[-1] == 2:
        return logits.softmax(-1)[:, 1].cpu()
    return torch.sigmoid(logits.reshape(-1)).cpu()


def plos_metrics(scores: Sequence[float], labels: Sequence[int], threshold: float = 0.5) -> dict[str, float]:
    """AUROC and AUPRC (nan when only one class is present), F1 at `threshold`, and the prevalence.

    Prolonged stays are rare, so F1 at 0.5 is often 0 while the ranking is good: AUPRC (against the
    prevalence, its chance level) says more."""
    m = binary_metrics(np.asarray(labels, dtype=np.float64), np.asarray(scores, dtype=np.float64), threshold,
                       n_bootstrap=0)
    values = {k: m["metrics"][k]["value"] for k in ("auroc", "auprc", "f1")} | {"prevalence": m["prevalence"]}
    return {k: math.nan if v is None else float(v) for k, v in values.items()}
