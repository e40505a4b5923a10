# The fastest recipe we found to reach full-val-split loss <= 1.88 on Tiny Shakespeare characters
# on a 2-core CPU (see docs/training.md for the lever table and the side-by-side with nanoGPT's CPU
# command):
#     python train.py config/train_shakespeare_char_fast.py
#     python bench.py time_to_target --target=1.88 --configs=nanogpt,fast --repeats=3
out_dir = "out-shakespeare-char-fast"
dataset = "shakespeare_char"
device = "cpu"
compile = False  # a cold compile on 2 cores takes longer than this whole run
# explicit math in bf16 (SDPA's CPU backward measured slower at T=128), SDPA in fp32
# (hardware.decide_sdpa)
sdpa = "auto"

# 4096 tokens a step (5x the reference's 768): bigger matmuls run at a better fraction of the
# CPU's peak, and Muon makes each of the 110 steps count. 0.45M tokens in all, 29% of what the
# reference sees.
gradient_accumulation_steps = 1
batch_size = 32
block_size = 128

# the reference's size (0.8M parameters) with the modern switches: rotary positions (learned
# ones: full-val 2.02 instead of 1.85 at 220 steps), RMSNorm, squared ReLU, and two from
# modded-nanogpt: value embeddings and U-net skips (together 1.7942 -> 1.7392 at 170 steps)
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
pos = "rope"
norm = "rmsnorm"
mlp = "relu2"
value_embeds = True
unet = True

# Muon on the blocks' weight matrices, AdamW on the rest (gptkit/muon.py), with an untied LM head
# and a 100x learning rate for the token (and value) embeddings (modded-nanogpt's)
optimizer = "muon"
muon_lr = 0.04  # 0.05 the same, 0.08 worse
learning_rate = 3e-3  # 5e-3 worse
embedding_lr = 0.3  # 0.5 worse
tie_weights = False
beta2 = 0.99
# the schedule is fitted to the run: no warmup (20 steps of it cost 0.046 at 170 steps), cosine to
# a tenth at the last step; the first 72 steps train on windows of 32, then 64 tokens
# (train.seq_len): 1.7942 -> 1.7392
max_iters = 110
lr_decay_iters = 110
warmup_iters = 0
min_lr = 3e-4  # 0 and 6e-4 worse
seq_warmup_iters = 72

# one cheap estimate at the start and the end (score the run fully with --eval_only=True)
eval_interval = 110
eval_iters = 2
log_interval = 10
always_save_checkpoint = False
