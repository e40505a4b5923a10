# The quickstart: a small character-level GPT on Tiny Shakespeare that trains in minutes on a
# 2-core CPU (nanoGPT's README CPU settings, run a little longer; docs/performance.md):
#   python train.py config/train_shakespeare_char_cpu.py
out_dir = "out-shakespeare-char-cpu"
eval_interval = 500
eval_iters = 20
log_interval = 100
always_save_checkpoint = False

dataset = "shakespeare_char"
gradient_accumulation_steps = 1
batch_size = 12
block_size = 64

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0

learning_rate = 1e-3
max_iters = 3000
lr_decay_iters = 3000
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 100

device = "cpu"
compile = False
