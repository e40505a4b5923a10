# The notes' translation (part ③), learned by attention: a small GPT reads `english = french` lines
# of data/translate (the notes' sentences, translated into French by rule) and writes the French
# after "=". python data/translate/prepare.py, then python train.py config/train_translate.py, then
# python long_range.py --task=translate --out_dirs=out-translate (exact match by source length).
# Against it, at matched parameters and CPU time: config/train_translate_gru.py (the notes'
# encoder-decoder, part ②) and config/train_translate_gru_attention.py (part ③(c)).
out_dir = "out-translate"
eval_interval = 500
eval_iters = 20
log_interval = 100
# val holds longer sentences than train: its loss is no guide to the task
always_save_checkpoint = True

dataset = "translate"
gradient_accumulation_steps = 1
batch_size = 32
block_size = 96  # holds the longest val pair (85 tokens: 40 English words and their French)

n_layer = 2
n_head = 4
n_embd = 64
dropout = 0.0

# the best measured rate of the sweep, on 3 seeds (docs/translation.md)
learning_rate = 5e-3
max_iters = 1500
lr_decay_iters = 1500
min_lr = 5e-4
beta2 = 0.99
warmup_iters = 100

device = "cpu"
dtype = "float32"
compile = False
