"""`--freeze-clinvec-steps N`: keep the ClinVec-initialised code rows fixed for the first N optimizer steps."""

from __future__ import annotations

import torch
from transformers import TrainerCallback


class FreezeRowsCallback(TrainerCallback):
    """Zero the frozen rows' gradients while `global_step < steps`, and restore their values after each step.

    The gradient hook keeps Adam's moments for those rows at zero (no momentum burst when they thaw);
    the restore undoes decoupled weight decay, which moves parameters even with a zero gradient.
    """

    def __init__(self, model, row_ids, steps: int):
        self.weight = model.get_input_embeddings().weight              # (V, E)
        self.rows = torch.as_tensor(list(row_ids), dtype=torch.long)
        self.steps = int(steps)
        self.global_step = 0
        self._handle = None
        self._saved = None

    @property
    def active(self) -> bool:
        return self.steps > 0 and len(self.rows) > 0 and self.global_step < self.steps

    def _mask_grad(self, grad: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return grad
        grad = grad.clone()
        grad[self.rows.to(grad.device)] = 0
        return grad

    def on_train_begin(self, args, state, control, **kwargs):
        self.global_step = state.global_step
        if self.active and self._handle is None:
            self._saved = self.weight.detach()[self.rows.to(self.weight.device)].clone()
            self._handle = self.weight.register_hook(self._mask_grad)

    def on_step_begin(self, args, state, control, **kwargs):
        self.global_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        # Called after the optimizer step; state.global_step already counts it.
        if self._saved is not None and state.global_step <= self.steps:
            with torch.no_grad():
                self.weight[self.rows.to(self.weight.device)] = self._saved.to(self.weight.dtype)
        self.global_step = state.global_step
        if not self.active:
            self._release()

    def on_train_end(self, args, state, control, **kwargs):
        self._release()

    def _release(self) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle, self._saved = None, None


def freeze_callback(model, row_ids, steps: int) -> TrainerCallback:
    """A TrainerCallback freezing `row_ids` of the code table for the first `steps` steps (0 = no-op)."""
    return FreezeRowsCallback(model, row_ids, steps)
