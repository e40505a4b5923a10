# The notes' example, learned: a small GPT on generated sentences where the word after "jumped"
# depends only on the subject, behind clauses full of other nouns. python
# data/long_range/prepare.py, then python train.py config/train_long_range.py (about 2 minutes on a
# 2-core CPU), then python attention_maps.py --out_dir=out-long-range
out_dir = "out-long-range"
eval_interval = 500
eval_iters = 20
log_interval = 100
# val holds longer sentences than train: its loss is no guide to the task
always_save_checkpoint = True

dataset = "long_range"
gradient_accumulation_steps = 1
batch_size = 32
block_size = 64  # the longest val sentence has 52 words, one token each

n_layer = 2
n_head = 4
n_embd = 64
dropout = 0.0
# each layer adds a token's own embedding to its values (the speedruns' lever, model.py): the head
# that finds the subject carries the subject's identity, so the step from the found subject to its
# sound is learned in the budget. Seeds 1-5 at 1,500 steps: 100, 100, 100, 79.0, 99.5% (without
# it 2.8, 7.1, 5.7, 88% for seeds 1-4: the subject found, its sound not; docs/attention.md).
# 192,512 parameters, 129,920 without.
value_embeds = True

learning_rate = 3e-3
max_iters = 1500
lr_decay_iters = 1500
min_lr = 3e-4
beta2 = 0.99
warmup_iters = 100

device = "cpu"
dtype = "float32"
compile = False
