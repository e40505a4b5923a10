"""
The recurrent baseline of the notes' argument: a GRU language model (token embedding, torch.nn.GRU,
an LM head). Before attention, a recurrent network read a sentence one token at a time and carried
all it had read in one hidden state; the notes argue that on long inputs this state loses the
context ("the action 'jumped' depends on the subject 'cat' ... the RNN might struggle with this"),
which attention fixes by letting each position look back at every earlier word directly.
long_range.py measures that claim, this model against the GPT: on the long-range corpus, and on
data/translate, where a GRU reading `english = french` is the notes' encoder-decoder (part ②): at
"=" its hidden state is the one vector that carries the whole English sentence.

attention=True is the notes' fix (part ③(c), Bahdanau et al. 2015) in decoder-only form: each
hidden state also reads every earlier hidden state through one causal attention head (model.py's
stage-4 attention, reused), added to it before the LM head, so the French words can look back at
the English ones instead of only at the one vector. (Bahdanau's decoder feeds the context into its
next recurrent step too; here it feeds only the prediction, as Luong et al. 2015's global
attention, which keeps the GRU one fused kernel.)

The interface is the GPT's where the scripts need it: forward(idx, targets) -> (logits, loss),
generate / generate_stream with the same options, get_num_params, config.block_size. train.py builds
it with --model_type=gru from the keys n_layer, n_embd, dropout, bias, tie_weights, attention and
block_size.

    python train.py config/train_long_range_gru.py
    python sample.py --out_dir=out-long-range-gru --start="the cat that saw the dog, jumped" \
        --max_new_tokens=2
    python train.py config/train_translate_gru_attention.py

Shapes: B batch, T sequence length (time), C the embedding and hidden state size (n_embd), L layers
(n_layer).
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from model import GPT, MultiHeadAttention, causal_mask, check_sampling, sample_next


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
    # one attention head over the GRU's own past states (the notes' part ③(c)); False: the notes'
    # plain RNN, all it has read in one hidden state
    attention: bool = False

    def __post_init__(self):
        if min(self.block_size, self.vocab_size, self.n_layer, self.n_embd) < 1:
            raise ValueError("block_size, vocab_size, n_layer and n_embd must all be at least 1")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")


class GRULM(nn.Module):
    """A GRU language model: embed each token, run the GRU over the sequence, read logits off each
    hidden state."""

    has_attention = False  # no heads to look into (model.GPT says True)

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
        # new with attention=True: a causal head from each state to every earlier state
        self.attn = (
            MultiHeadAttention(C, C, config.block_size, config.dropout, 1, qkv_bias=config.bias)
            if config.attention
            else None
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
        hidden, _, _ = self.look_back(self.drop(hidden))
        if targets is not None:
            logits = self.lm_head(hidden)  # (B, T, vocab_size)
            loss = F.cross_entropy(
                logits.flatten(0, 1).float(), targets.reshape(-1), ignore_index=-1
            )
            return logits, loss
        return self.lm_head(hidden[:, [-1], :]), None  # (B, 1, vocab_size)

    def look_back(self, hidden, past=None):
        """
        attention=True: each state plus what its attention head reads from it and every earlier
        state (the notes' ③(c)); otherwise hidden as it is. hidden (B, T, C): the states of T new
        tokens; past: the keys and values of the states before them, (B, 1, T_past, C) each, or
        None. Returns (B, T, C), the keys and values up to the last new token, and the weights
        (B, 1, T, T_past + T) (None, None without attention).
        """
        if self.attn is None:
            return hidden, None, None
        q, k, v = self.attn.qkv(hidden)  # (B, 1, T, C) each
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, 1, T_k, C)
        T, T_k = q.shape[2], k.shape[2]
        # query i sits at T_k - T + i and sees keys 0 .. T_k - T + i; no block_size limit here
        mask = causal_mask(T_k)[T_k - T :].to(q.device)  # (T, T_k), True = future
        context, weights = self.attn.attend(q, k, v, mask)  # (B, 1, T, C), (B, 1, T, T_k)
        out = hidden + self.attn.project(context)  # the state, and what it read
        return out, (k, v), weights

    # --------------------------------------------------------------------------------------------
    # Generation: the hidden state is the whole memory of what was read, so one new token costs one
    # step

    @torch.no_grad()
    def next_token_logits(self, idx, state=None):
        """
        (logits (B, vocab_size) for the token after idx (B, T), the state after idx). state: the
        state after the tokens before idx (None: the start), so a caller that keeps it runs each
        token once: the GRU's hidden state (L, B, C) and, with attention, the keys and values of
        every state so far. Unlike the GPT there is no context limit: the GRU's state holds
        everything at a fixed size (with attention, the keys and values grow by one per token).
        """
        rnn_state, past = state if state is not None else (None, None)
        hidden, rnn_state = self.rnn(self.wte(idx), rnn_state)  # (B, T, C), (L, B, C)
        hidden, past, _ = self.look_back(hidden, past)
        return self.lm_head(hidden[:, -1, :]).float(), (rnn_state, past)

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
        use_cache=True carries the state (next_token_logits), so each new token is one GRU step;
        use_cache=False reads all of idx again every step.
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
