"""Character-level language models in plain PyTorch: an LSTM and a GPT-style decoder.

Both map token ids (B, T) to next-token logits (B, T, V) and expose the two calls an
incremental decoder needs: `prefill` over a prompt and `step` over one new token per row,
carrying a per-row state (LSTM hidden/cell, or the Transformer's key/value cache).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LSTMConfig:
    vocab_size: int
    embed_dim: int = 64
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.1


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    block_size: int = 256  # longest context the model attends to
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.1


class CharLSTM(nn.Module):
    """Embedding → stacked LSTM → linear head (the classic char-RNN)."""

    architecture = "lstm"

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        self.lstm = nn.LSTM(
            config.embed_dim,
            config.hidden_size,
            config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(
        self, idx: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """idx (B, T) → logits (B, T, V) and the final (h, c), each (layers, B, H)."""
        out, new_state = self.lstm(self.embed(idx), state)
        return self.head(self.drop(out)), new_state


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout
        self.resid_drop = nn.Dropout(config.dropout)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, C) → q, k, v each (B, nh, T, hs)."""
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        shape = (b, t, self.n_head, c // self.n_head)
        return (
            q.view(shape).transpose(1, 2),
            k.view(shape).transpose(1, 2),
            v.view(shape).transpose(1, 2),
        )

    def merge_heads(self, y: torch.Tensor) -> torch.Tensor:
        """y (B, nh, T, hs) → (B, T, C) projected back."""
        b, nh, t, hs = y.shape
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, t, nh * hs)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.split_heads(x)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.merge_heads(y), k, v


class Block(nn.Module):
    ln1: nn.LayerNorm
    attn: CausalSelfAttention
    ln2: nn.LayerNorm
    mlp: nn.Sequential

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd),
            nn.Dropout(config.dropout),
        )


class CharGPT(nn.Module):
    """A small GPT: token + learned position embeddings, pre-norm blocks, tied head."""

    architecture = "transformer"

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.layers: list[Block] = list(self.blocks)  # type: ignore[arg-type]  # typed view of the same modules
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) with T ≤ block_size → logits (B, T, V)."""
        logits, _ = self.forward_with_cache(idx)
        return logits

    def forward_with_cache(self, idx: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Full causal pass; also returns each layer's keys and values, (B, nh, T, hs)."""
        _, t = idx.shape
        if t > self.config.block_size:
            raise ValueError(f"sequence of {t} tokens exceeds block_size {self.config.block_size}")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        cache = []
        for block in self.layers:
            attn_out, k, v = block.attn(block.ln1(x))
            x = x + attn_out
            x = x + block.mlp(block.ln2(x))
            cache.append((k, v))
        return self.head(self.ln_f(x)), cache

    def step(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
    ) -> torch.Tensor:
        """One decoding step for B rows at different positions.

        tokens, positions: (B,). keys/values: (layers, B, nh, Tmax, hs), updated in place at
        each row's position; a row attends to cache slots 0..position. Returns logits (B, V).
        """
        b = tokens.shape[0]
        rows = torch.arange(b, device=tokens.device)
        span = int(positions.max()) + 1
        # (B, 1, 1, span): True where a row may attend.
        mask = torch.arange(span, device=tokens.device)[None, :] <= positions[:, None]
        mask = mask[:, None, None, :]
        x = (self.tok_emb(tokens) + self.pos_emb(positions))[:, None, :]  # (B, 1, C)
        for layer, block in enumerate(self.layers):
            q, k, v = block.attn.split_heads(block.ln1(x))  # each (B, nh, 1, hs)
            keys[layer, rows, :, positions] = k[:, :, 0, :]
            values[layer, rows, :, positions] = v[:, :, 0, :]
            y = F.scaled_dot_product_attention(
                q, keys[layer, :b, :, :span], values[layer, :b, :, :span], attn_mask=mask
            )
            x = x + block.attn.merge_heads(y)
            x = x + block.mlp(block.ln2(x))
        return self.head(self.ln_f(x))[:, 0, :]


LanguageModel = CharLSTM | CharGPT


def build_model(architecture: str, model_args: dict[str, Any]) -> LanguageModel:
    """Rebuild a model from the `model_args` stored beside its weights."""
    if architecture == CharLSTM.architecture:
        return CharLSTM(LSTMConfig(**model_args))
    if architecture == CharGPT.architecture:
        return CharGPT(GPTConfig(**model_args))
    raise ValueError(f"unknown architecture {architecture!r}; expected 'lstm' or 'transformer'")


def model_args_of(model: LanguageModel) -> dict[str, Any]:
    return asdict(model.config)
