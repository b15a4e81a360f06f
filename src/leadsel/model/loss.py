"""The per-sample loss: the only place in leadsel where a loss is computed.

``per_sample_loss`` takes a causal LM and a right-padded batch whose ``labels`` are -100 outside
the supervised response, and returns each sample's mean response-token loss (logits at position j
predict token j+1; cross-entropy in fp32) and its number of supervised tokens. Scoring passes,
training and evaluation all call it (through :class:`LossModule` where a wrapped module is
needed, e.g. under DDP).

Memory: the logits are built ``chunk`` supervised positions at a time (``model.logit_chunk``), so
the loss's peak is about chunk x vocabulary x 12 bytes (fp32 logits, their log-softmax, and their
gradient in backward) whatever the number of tokens -- 1.6 GB per copy for 3080 tokens of a
128k vocabulary if built at once.

Speed: when the model exposes its decoder and output head, the vocabulary projection is applied
only at the supervised positions (the prompt's logits are never built), which matters for long
prompts and large vocabularies. Models whose head post-processes logits in ways not handled here
fall back to the full ``model(...).logits``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100


def _decoder_and_head(model: nn.Module):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(base, "config", None)
    # heads that rescale logits (Cohere, Granite) take the exact path below
    if cfg is None or getattr(cfg, "logit_scale", None) not in (None, 1.0) or \
            getattr(cfg, "logits_scaling", None) not in (None, 1.0):
        return None
    try:
        decoder, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or head is None or decoder is base:
        return None
    return decoder, head, getattr(cfg, "final_logit_softcapping", None)


def per_sample_loss(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    labels: torch.Tensor, exact_logits: bool = False, chunk: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean response-token loss [B] fp32, supervised token count [B]) of a right-padded batch.

    ``chunk``: at most this many positions' vocabulary logits exist at once (``model.logit_chunk``);
    None builds them all in one go."""
    targets = labels[:, 1:]
    mask = targets != IGNORE
    counts = mask.sum(1)
    if (counts == 0).any():
        raise ValueError("a sample in the batch has no supervised token; encoding should have rejected it")
    parts = None if exact_logits else _decoder_and_head(model)
    if parts is not None:
        decoder, head, softcap = parts
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        rows = hidden[:, :-1][mask]

        def to_logits(h):
            logits = head(h).float()
            return softcap * torch.tanh(logits / softcap) if softcap else logits
        trainable_head = any(p.requires_grad for p in head.parameters())
    else:
        rows = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][mask]
        to_logits, trainable_head = (lambda z: z.float()), False
    token_loss = _token_losses(to_logits, rows, targets[mask], chunk, trainable_head)
    index = torch.arange(input_ids.shape[0], device=input_ids.device).unsqueeze(1).expand_as(mask)[mask]
    sums = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device)
    sums = sums.index_add(0, index, token_loss)
    return sums / counts, counts


def _token_losses(to_logits, rows: torch.Tensor, targets: torch.Tensor, chunk: int | None,
                  trainable_head: bool) -> torch.Tensor:
    """Cross-entropy of each row's logits, ``chunk`` rows at a time. Under autograd each chunk is
    checkpointed: its logits are freed after the forward and rebuilt in backward (one more head
    matmul per chunk), so no more than one chunk's logits and their gradient exist at once."""
    def piece(h, t):
        return F.cross_entropy(to_logits(h), t, reduction="none")

    if chunk is None or len(rows) <= chunk:
        return piece(rows, targets)
    grad = torch.is_grad_enabled() and (rows.requires_grad or trainable_head)
    from torch.utils.checkpoint import checkpoint

    return torch.cat([checkpoint(piece, rows[s:s + chunk], targets[s:s + chunk], use_reentrant=False) if grad
                      else piece(rows[s:s + chunk], targets[s:s + chunk]) for s in range(0, len(rows), chunk)])


class LossModule(nn.Module):
    """Wraps a causal LM so that its forward returns per-sample losses (for accelerate/DDP)."""

    def __init__(self, model: nn.Module, chunk: int | None = None):
        super().__init__()
        self.model, self.chunk = model, chunk

    def forward(self, input_ids, attention_mask, labels):
        return per_sample_loss(self.model, input_ids, attention_mask, labels, chunk=self.chunk)
