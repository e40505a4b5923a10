# The fastest recipe we found to reach full-val-split loss <= 1.88 on Tiny Shakespeare characters on a
# 2-core CPU (see docs/performance.md for the lever table and the side-by-side with nanoGPT's CPU command):
#     python train.py config/train_shakespeare_char_fast.py
#     python bench.py time_to_target --target=1.88 --configs=ref,fast --repeats=3
out_dir = "out-shakespeare-char-fast"
dataset = "shakespeare_char"
device = "cpu"
compile = False  # not measured yet: inductor's compile time on this CPU would count in a ~40 s run
sdpa = "auto"  # explicit math in bf16 (SDPA's CPU backward is 1.5x slower at T=128), SDPA in fp32 (hardware.decide_sdpa)

# 4096 tokens a step (5x the reference's 768): bigger matmuls run at a better fraction of the CPU's peak,
# and Muon makes each of the 170 steps count. 0.7M tokens in all, 45% of what the reference sees.
gradient_accumulation_steps = 1
batch_size = 32
block_size = 128

# the reference's size (0.8M parameters) with the modern switches: rotary positions (learned ones: full-val
# 2.02 instead of 1.85 at 220 steps), RMSNorm, squared ReLU
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
pos = "rope"
norm = "rmsnorm"
mlp = "relu2"

# Muon on the blocks' weight matrices, AdamW on the rest (muon.py). An untied LM head and a 100x learning
# rate for the token embedding (modded-nanogpt's) cut the steps from 220 to 170: full-val 1.8409 vs 1.8448
# (untied alone: 1.8698; tied with a 30x embedding lr: 1.8386 at 220 steps)
optimizer = "muon"
muon_lr = 0.05
learning_rate = 3e-3  # twice these (0.1 / 6e-3) trained worse per step
embedding_lr = 0.3
tie_weights = False
beta2 = 0.99
# the schedule is fitted to the run: short warmup, cosine to a tenth at the last step
max_iters = 170
lr_decay_iters = 170
warmup_iters = 20
min_lr = 3e-4

# one cheap estimate at the end instead of one every 250 steps (score it fully with --eval_only=True)
eval_interval = 170
eval_iters = 10
log_interval = 25
always_save_checkpoint = False
