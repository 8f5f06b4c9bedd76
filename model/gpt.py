"""A character-level decoder-only transformer in the style of nanoGPT.

Pre-LayerNorm blocks (``x = x + attn(ln1(x))``, then ``x = x + ffn(ln2(x))``), learned token and
position embeddings, a final LayerNorm and an untied linear head. One forward pass can also hand back,
for every block, the feed-forward output (what the FFN adds to the residual stream), the attention
output and the residual stream after the block: that is the :class:`Trace` ffnlens explores.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 65  # number of distinct characters
    block_size: int = 256  # context length (positions 0..block_size-1)
    n_layer: int = 6  # transformer blocks
    n_head: int = 6  # attention heads per block
    n_embd: int = 384  # residual stream width
    ffn_mult: int = 4  # FFN hidden width = ffn_mult * n_embd
    dropout: float = 0.2  # dropout after attention weights, projections and the FFN
    activation: str = "relu"  # FFN non-linearity: "relu" (ours) or "gelu" (nanoGPT's)
    bias: bool = True  # biases in the FFN, the attention projection and the LayerNorms
    qkv_bias: bool = False  # biases in the query/key/value maps (none in "Let's build GPT")
    head_bias: bool = True  # bias in the final vocabulary head
    tied_head: bool = False  # share the head's weight with the token embedding

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Trace:
    """Per-block activations of one forward pass, each a list of n_layer tensors (B, T', C).

    T' is T, or 1 when ``last_position`` is set (only the last position is kept).
    """

    last_position: bool = False

    ffn: list[torch.Tensor] = field(default_factory=list)  # what the FFN adds to the residual
    attn: list[torch.Tensor] = field(default_factory=list)  # what attention adds to the residual
    resid: list[torch.Tensor] = field(default_factory=list)  # residual stream after the block


@dataclass(frozen=True)
class Intervention:
    """Sublayers to leave out of one forward pass (METHOD.md's intervention figures).

    A dropped attention makes block b's output ``x + ffn(ln2(x))``; a dropped FFN makes it
    ``x + attn(ln1(x))``; the rest of the model runs unchanged on what it is given. A dropped
    sublayer's output is recorded as zeros in a :class:`Trace`."""

    drop_attn: frozenset[int] = frozenset()  # blocks whose attention output is left out
    drop_ffn: frozenset[int] = frozenset()  # blocks whose FFN output is left out

    @classmethod
    def only_ffn(cls, keep, n_layer: int) -> "Intervention":
        """Keep only the FFNs of the blocks in ``keep`` (every other block's FFN dropped)."""
        return cls(drop_ffn=frozenset(range(n_layer)) - frozenset(keep))

    def check(self, n_layer: int) -> None:
        bad = sorted(b for b in self.drop_attn | self.drop_ffn if not 0 <= b < n_layer)
        if bad:
            raise ValueError(f"intervention names blocks {bad}; the model has blocks 0-{n_layer - 1}")

    def __bool__(self) -> bool:
        return bool(self.drop_attn or self.drop_ffn)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "n_embd must be a multiple of n_head"
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.qkv_bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(y))


class FeedForward(nn.Module):
    """Linear(C -> mult*C) -> ReLU (or GELU) -> Linear(mult*C -> C) -> Dropout."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, cfg.ffn_mult * cfg.n_embd, bias=cfg.bias)
        self.act = nn.ReLU() if cfg.activation == "relu" else nn.GELU()
        self.proj = nn.Linear(cfg.ffn_mult * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.ffn = FeedForward(cfg)

    def forward(self, x: torch.Tensor, trace: Trace | None = None, last_only: bool = False,
                drop_attn: bool = False, drop_ffn: bool = False):
        a = torch.zeros_like(x) if drop_attn else self.attn(self.ln1(x))
        x = x + a
        if last_only:
            # Only the last position is wanted from here on: keys and values above needed every
            # position, the FFN does not.
            x, a = x[:, -1:], a[:, -1:]
        f = torch.zeros_like(x) if drop_ffn else self.ffn(self.ln2(x))
        x = x + f
        if trace is not None:
            keep = slice(-1, None) if trace.last_position else slice(None)
            trace.attn.append(a[:, keep])
            trace.ffn.append(f[:, keep])
            trace.resid.append(x[:, keep])
        return x


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=cfg.head_bias)
        if cfg.tied_head:
            self.head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # scaled init of the residual projections (GPT-2)
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        trace: Trace | None = None,
        last_only: bool = False,
        skip_head: bool = False,
        intervention: Intervention | None = None,
    ):
        """idx (B, T) of token ids -> logits (B, T, V), or (B, 1, V) with ``last_only``.

        ``trace``: a :class:`Trace` to fill with every block's activations.
        ``last_only``: compute the final block's FFN, the final LayerNorm and the head only at the
        last position (all that a next-token query needs). ``skip_head``: return None instead of
        logits (an activation store needs only the trace). ``intervention``: sublayers to leave out.
        """
        B, T = idx.shape
        assert T <= self.cfg.block_size, (
            f"Cannot forward sequence of length {T}, block size is only {self.cfg.block_size}"
        )
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        last = len(self.blocks) - 1
        iv = intervention or Intervention()
        for i, block in enumerate(self.blocks):
            x = block(x, trace, last_only=last_only and i == last,
                      drop_attn=i in iv.drop_attn, drop_ffn=i in iv.drop_ffn)
        if skip_head:
            return None, None
        logits = self.head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    @torch.inference_mode()
    def read_last(self, idx: torch.Tensor, activation: str = "ffn", head: bool = True,
                  intervention: Intervention | None = None):
        """idx (B, T) -> (logits at the last position (B, V) or None without ``head``, every
        block's ``activation`` ("ffn", "attn" or "resid") at the last position (L, B, C) float32).
        The one place the per-block outputs a query, a store or a baseline reads are taken."""
        trace = Trace(last_position=True)
        logits, _ = self(idx, trace=trace, last_only=True, skip_head=not head, intervention=intervention)
        acts = torch.stack([t[:, -1].float() for t in getattr(trace, activation)])
        return (logits[:, -1] if head else None), acts

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, n: int) -> torch.Tensor:
        """Greedy continuation by n tokens (deterministic: used by model cards and tests)."""
        for _ in range(n):
            logits, _ = self(idx[:, -self.cfg.block_size :], last_only=True)
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        return idx
