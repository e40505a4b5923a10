"""
The recurrent baseline of the notes' argument: a GRU language model (token embedding, torch.nn.GRU,
an LM head). Before attention, a recurrent network read a sentence one token at a time and carried
all it had read in one hidden state; the notes argue that on long inputs this state loses the
context ("the action 'jumped' depends on the subject 'cat' ... the RNN might struggle with this"),
which attention fixes by letting each position look back at every earlier word directly.
long_range.py measures that claim on the long-range corpus, this model against the GPT.

The interface is the GPT's where the scripts need it: forward(idx, targets) -> (logits, loss),
generate / generate_stream with the same options, get_num_params, config.block_size. train.py builds
it with --model_type=gru from the keys n_layer, n_embd, dropout, bias, tie_weights and block_size.

    python train.py config/train_long_range_gru.py
    python sample.py --out_dir=out-long-range-gru --start="the cat that saw the dog, jumped" --max_new_tokens=2

Shapes: B batch, T sequence length (time), C the embedding and hidden state size (n_embd), L layers
(n_layer).
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from model import GPT, check_sampling, sample_next


@dataclass(frozen=True)
class GRUConfig:
    block_size: int = 1024  # the length of the training windows; a GRU itself runs on any length
    vocab_size: int = 50304
    n_layer: int = 1  # stacked GRU layers, each reading the hidden states of the one below
    # the embedding size, and the size of each layer's hidden state: all it remembers
    n_embd: int = 768
    # on the embeddings, between layers and before the head (Zaremba et al. 2014)
    dropout: float = 0.0
    bias: bool = True  # the gates' biases, as torch.nn.GRU has them by default
    tie_weights: bool = True  # LM head shares the token embedding matrix (Press & Wolf 2017)

    def __post_init__(self):
        if min(self.block_size, self.vocab_size, self.n_layer, self.n_embd) < 1:
            raise ValueError("block_size, vocab_size, n_layer and n_embd must all be at least 1")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")


class GRULM(nn.Module):
    """A GRU language model: embed each token, run the GRU over the sequence, read logits off each
    hidden state."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        C = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, C)
        self.drop = nn.Dropout(config.dropout)
        # torch warns of dropout after a single layer
        between_layers = config.dropout if config.n_layer > 1 else 0.0
        self.rnn = nn.GRU(
            C,
            C,
            num_layers=config.n_layer,
            bias=config.bias,
            batch_first=True,
            dropout=between_layers,
        )
        self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
        if config.tie_weights:
            self.wte.weight = self.lm_head.weight
        # the GPT's init for the embedding and head; the GRU keeps torch's uniform(+-1/sqrt(C)) init
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.02)
        if not config.tie_weights:
            nn.init.normal_(self.wte.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding=True):
        """Parameter count (a tied embedding and head count once). non_embedding: for the GPT's
        signature; a GRU has no position embeddings to leave out."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None):
        """idx (B, T) token ids -> (logits, loss), as the GPT's. Without targets only the last
        position's logits."""
        # (B, T, C): the last layer's state after each token
        hidden, _ = self.rnn(self.drop(self.wte(idx)))
        hidden = self.drop(hidden)
        if targets is not None:
            logits = self.lm_head(hidden)  # (B, T, vocab_size)
            loss = F.cross_entropy(
                logits.flatten(0, 1).float(), targets.reshape(-1), ignore_index=-1
            )
            return logits, loss
        return self.lm_head(hidden[:, [-1], :]), None  # (B, 1, vocab_size)

    # ------------------------------------------------------------------------------------------------
    # Generation: the hidden state is the whole memory of what was read, so one new token costs one
    # step

    @torch.no_grad()
    def next_token_logits(self, idx, state=None):
        """
        (logits (B, vocab_size) for the token after idx (B, T), the hidden state (L, B, C) after
        idx). state: the hidden state after the tokens before idx (None: the start, zeros), so a
        caller that keeps it runs each token once. Unlike the GPT there is no context limit: the
        state holds everything, at a fixed size.
        """
        hidden, state = self.rnn(self.wte(idx), state)  # (B, T, C), (L, B, C)
        return self.lm_head(hidden[:, -1, :]).float(), state

    @torch.no_grad()
    def generate_stream(
        self,
        idx,
        max_new_tokens,
        temperature=1.0,
        top_k=None,
        top_p=None,
        generator=None,
        use_cache=True,
    ):
        """
        Yield (B, 1) next-token tensors one by one, continuing idx (B, T); the options are the GPT's
        (model.py: temperature 0 or top_k=1 greedy, top_p nucleus, generator one or one per row).
        use_cache=True carries the hidden state, so each new token is one GRU step; use_cache=False
        reads all of idx again every step.
        """
        check_sampling(temperature, top_k, top_p)
        state = None
        new = idx  # the tokens the model has not read yet
        for _ in range(max_new_tokens):
            if use_cache:
                logits, state = self.next_token_logits(new, state)
            else:
                logits, _ = self.next_token_logits(idx)
            idx_next = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
            idx, new = torch.cat((idx, idx_next), dim=1), idx_next
            yield idx_next

    generate = GPT.generate  # the GPT's: generate_stream's tokens, concatenated after idx
