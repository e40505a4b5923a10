# The fast recipe for CPUs where training runs in float32: no native bf16 (no avx512_bf16 /
# amx_bf16, e.g. an AVX2-only CPU; train.py prints "dtype = float32" at start). There a step costs
# far more than its bf16 time (docs/performance.md), so this recipe trades per-step work for steps:
# 3 layers instead of 4 and 2048-token steps instead of 4096, which reach full-val <= 1.88 in ~40%
# of config/train_shakespeare_char_fast.py's compute (docs/training.md):
#     python train.py config/train_shakespeare_char_fast_fp32.py
#     python bench.py time_to_target --target=1.88 --configs=nanogpt,fast_fp32 --repeats=3
out_dir = "out-shakespeare-char-fast-fp32"
dataset = "shakespeare_char"
device = "cpu"
compile = False  # a cold compile on 2 cores takes longer than this whole run
sdpa = "auto"  # SDPA in fp32 (hardware.decide_sdpa)

gradient_accumulation_steps = 1
# 2048 tokens a step: more steps, each cheaper (fp32 at 170 steps: 1.8607; 3072 x 130: 1.8694)
batch_size = 16
block_size = 128

# the fast config's model with one layer fewer (0.63M parameters)
n_layer = 3
n_head = 4
n_embd = 128
dropout = 0.0
pos = "rope"
norm = "rmsnorm"
mlp = "relu2"
value_embeds = True
unet = True

# the fast config's optimizer and schedule, fitted to 170 steps
optimizer = "muon"
muon_lr = 0.04
learning_rate = 3e-3
embedding_lr = 0.3
tie_weights = False
beta2 = 0.99
max_iters = 170
lr_decay_iters = 170
warmup_iters = 0
min_lr = 3e-4
seq_warmup_iters = 110

eval_interval = 170
eval_iters = 2
log_interval = 10
always_save_checkpoint = False
