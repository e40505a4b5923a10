# The CPU speedrun frontier, 10 minutes: the lowest full-val loss on Tiny Shakespeare characters we
# reached within 10 minutes of wall time on a 2-core CPU with native bf16 (the whole command,
# start-up and a cold compile included; docs/training.md):
#     python train.py config/speedrun_10min.py
#     python bench.py time_to_target --configs=config/speedrun_10min.py
# The fast config's model (config/train_shakespeare_char_fast.py: Muon, value embeddings, U-net
# skips, a sequence-length warmup), compiled where that pays (compile="auto"), for 3200 steps. So
# many passes over the data (13) overfit the 0.8M-parameter model unless regularized: Muon's weight
# decay does it for free, where dropout's random masks would cost more than the compiled step itself
# (docs/performance.md). Each number's sweep (one seed, full val) is beside it and in
# docs/training.md.
out_dir = "out-speedrun-10min"
dataset = "shakespeare_char"
device = "cpu"
compile = "auto"  # measured at start-up: compiled when the steps left pay back a cold compile

gradient_accumulation_steps = 1
batch_size = 32
block_size = 128

n_layer = 4  # 6 layers overfit more at the same decay (2400 steps: 1.5032 against 1.4937)
n_head = 4
n_embd = 128
dropout = 0.0
pos = "rope"
norm = "rmsnorm"
mlp = "relu2"
value_embeds = True
unet = True

optimizer = "muon"
muon_lr = 0.04
muon_weight_decay = 0.15  # at 2400 steps: 0.15 -> 1.4820, 0.25 -> 1.4937, 0.5 -> 1.5608
learning_rate = 3e-3
embedding_lr = 0.3
tie_weights = False
beta2 = 0.99
max_iters = 3200  # 2400 steps: 1.4820; 3200: 1.4734; 4000: 1.4782
lr_decay_iters = 3200
warmup_iters = 0
min_lr = 3e-4
seq_warmup_iters = 2080  # 65% of the run on windows of 32, then 64 tokens, as the fast config

# one estimate at the start and one at the end; score fully with --eval_only=True
eval_interval = 3200
eval_iters = 2
log_interval = 50
always_save_checkpoint = False
