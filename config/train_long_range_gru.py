# The notes' recurrent baseline against config/train_long_range.py's GPT: a GRU language model
# (recurrent.py) on the same sentences, with about the GPT's parameter count (0.131M against
# 0.130M) and the same CPU time (one thread; docs/performance.md):
#   python data/long_range/prepare.py
#   python train.py config/train_long_range_gru.py   (and config/train_long_range.py)
#   python long_range.py --out_dirs=out-long-range,out-long-range-gru --plot=True
# (the last: accuracy by subject-verb distance)
out_dir = "out-long-range-gru"
eval_interval = 500
eval_iters = 20
log_interval = 100
# val holds longer sentences than train: its loss is no guide to the task
always_save_checkpoint = True

dataset = "long_range"
gradient_accumulation_steps = 1
batch_size = 32
block_size = 64  # the GPT's windows; the GRU itself reads any length

model_type = "gru"
n_layer = 1
# one hidden state of 112 numbers: 130,704 parameters with the tied embedding, the GPT 129,920
n_embd = 112
bias = True  # the gates' biases (TrainConfig's False is the GPT's habit)
dropout = 0.0

# in the sweep's plateau: 2e-2 to 2e-1 all 100% on the dev sentences, 1e-2 62%, 6e-3 and below ~3%
learning_rate = 3e-2
# the GPT's 1,500 in CPU time: a GRU step costs a little less than a GPT step (whole runs paired
# at equal load; docs/performance.md)
max_iters = 1680
lr_decay_iters = 1680
min_lr = 3e-3
beta2 = 0.99
warmup_iters = 100

device = "cpu"
dtype = "float32"
compile = False
