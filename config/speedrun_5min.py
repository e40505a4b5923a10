# The CPU speedrun frontier, 5 minutes: the lowest full-val loss on Tiny Shakespeare characters we
# reached within 5 minutes of wall time on a 2-core CPU with native bf16 (the whole command,
# start-up included; docs/training.md):
#     python train.py config/speedrun_5min.py
#     python bench.py time_to_target --configs=config/speedrun_5min.py
# The fast config's recipe (config/train_shakespeare_char_fast.py: Muon, value embeddings, U-net
# skips, a sequence-length warmup), run for as many steps as the budget holds.
out_dir = "out-speedrun-5min"
dataset = "shakespeare_char"
device = "cpu"
compile = False  # a cold compile on 2 cores costs more than it saves in a few minutes

gradient_accumulation_steps = 1
batch_size = 32
block_size = 128

n_layer = 4
n_head = 4
n_embd = 128
# 1320 steps see 5.4M tokens, ~5 passes over the data: with 0.8M parameters, still learning
dropout = 0.0
pos = "rope"
norm = "rmsnorm"
mlp = "relu2"
value_embeds = True
unet = True

optimizer = "muon"
muon_lr = 0.04
learning_rate = 3e-3
embedding_lr = 0.3
tie_weights = False
beta2 = 0.99
max_iters = 1320
lr_decay_iters = 1320
warmup_iters = 0
min_lr = 3e-4
seq_warmup_iters = 858  # 65% of the run on windows of 32, then 64 tokens, as the fast config

# one estimate at the start and one at the end; score fully with --eval_only=True
eval_interval = 1320
eval_iters = 2
log_interval = 50
always_save_checkpoint = False
