# The CPU speedrun frontier, 5 minutes: the lowest full-val loss on Tiny Shakespeare characters we
# reached within 5 minutes of wall time on a 2-core CPU with native bf16 (the whole command,
# start-up and a cold compile included; docs/training.md):
#     python train.py config/speedrun_5min.py
#     python bench.py time_to_target --configs=config/speedrun_5min.py
# The 10-minute recipe (config/speedrun_10min.py: the fast config's model regularized by Muon's
# weight decay) for as many steps as 5 minutes hold. Compiled, 1600 steps took 312.9 s (1.4896):
# three window lengths cost ~90 s of cold compile, more than 1.5x faster steps save in 5 minutes, so
# compile="auto" runs this one eager.
out_dir = "out-speedrun-5min"
dataset = "shakespeare_char"
device = "cpu"
compile = "auto"  # measured at start-up: compiled when the steps left pay back a cold compile

gradient_accumulation_steps = 1
batch_size = 32
block_size = 128

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0  # dropout's random masks cost more than the compiled step itself on a CPU
pos = "rope"
norm = "rmsnorm"
mlp = "relu2"
value_embeds = True
unet = True

optimizer = "muon"
muon_lr = 0.04
muon_weight_decay = 0.15
learning_rate = 3e-3
embedding_lr = 0.3
tie_weights = False
beta2 = 0.99
max_iters = 1500
lr_decay_iters = 1500
warmup_iters = 0
min_lr = 3e-4
seq_warmup_iters = 975  # 65% of the run on windows of 32, then 64 tokens, as the fast config

# one estimate at the start and one at the end; score fully with --eval_only=True
eval_interval = 1500
eval_iters = 2
log_interval = 50
always_save_checkpoint = False
