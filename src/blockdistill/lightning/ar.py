"""Stage 1: AR continued pre-training: next-token CE on the response (and its EOS)."""

from __future__ import annotations

from torch import Tensor, nn

from blockdistill.config import OptimConfig
from blockdistill.data import Batch
from blockdistill.lightning.common import StageSystem, with_router_aux
from blockdistill.losses import ar_loss, response_positions
from blockdistill.models.adapter import causal_logits


class ARSystem(StageSystem):
    """Trains a plain HF causal LM (or Qwen2.5-VL). The LM head runs only on response positions."""

    def __init__(self, model: nn.Module, optim: OptimConfig, attn_backend: str = "sdpa") -> None:
        super().__init__(model, optim)
        self.attn_backend = attn_backend

    def compute_loss(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        targets, present = response_positions(batch.prompt_lens, batch.response_lens, batch.input_ids.shape[1])
        logits = causal_logits(self.net, batch.input_ids, batch.seq_lens, targets - 1, batch.vision,
                               self.attn_backend)
        loss = ar_loss(logits, batch.input_ids.gather(1, targets), present)
        return with_router_aux(self.net, loss, {})
