# The CPU speedrun frontier, 90 seconds: the lowest full-val loss on Tiny Shakespeare characters we
# reached within 90 seconds of wall time on a 2-core CPU with native bf16 (the whole command,
# start-up included; docs/training.md):
#     python train.py config/speedrun_90s.py
#     python bench.py time_to_target --configs=config/speedrun_90s.py
# The fast config's recipe (config/train_shakespeare_char_fast.py: Muon, value embeddings, U-net
# skips, a sequence-length warmup), run for as many steps as the budget holds.
out_dir = "out-speedrun-90s"
dataset = "shakespeare_char"
device = "cpu"
compile = "auto"  # measured at start-up: at this length a cold compile does not pay, so eager

gradient_accumulation_steps = 1
batch_size = 32
block_size = 128

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0  # too few passes over the data to overfit (410 steps: 1.7M tokens, ~1.6 epochs)
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
max_iters = 410
lr_decay_iters = 410
warmup_iters = 0
min_lr = 3e-4
seq_warmup_iters = 266  # 65% of the run on windows of 32, then 64 tokens, as the fast config

# one estimate at the start and one at the end; score fully with --eval_only=True
eval_interval = 410
eval_iters = 2
log_interval = 50
always_save_checkpoint = False
