# The notes' encoder-decoder (part ②) against config/train_translate.py's GPT: a GRU language model
# (recurrent.py) on the same `english = french` lines. Decoder-only, it is the encoder while it
# reads the English and the decoder once it writes the French: at "=" its hidden state, 108 numbers,
# is the one vector that carries the whole sentence, and the French is written from that vector
# alone. About the GPT's parameters (134,460 against 136,448) and CPU time (docs/translation.md).
# python data/translate/prepare.py, then python train.py config/train_translate_gru.py
out_dir = "out-translate-gru"
eval_interval = 500
eval_iters = 20
log_interval = 100
# val holds longer sentences than train: its loss is no guide to the task
always_save_checkpoint = True

dataset = "translate"
gradient_accumulation_steps = 1
batch_size = 32
block_size = 96  # the GPT's windows; the GRU itself reads any length

model_type = "gru"
n_layer = 1
n_embd = 108  # the one vector: 108 numbers
bias = True  # the gates' biases (TrainConfig's False is the GPT's habit)
dropout = 0.0

# the best measured rate of the sweep, on 3 seeds (docs/translation.md)
learning_rate = 5e-2
# the GPT's 1,500 steps in CPU time: a GRU step costs ~0.9 of a GPT step here (docs/translation.md)
max_iters = 1650
lr_decay_iters = 1650
min_lr = 5e-3
beta2 = 0.99
warmup_iters = 100

device = "cpu"
dtype = "float32"
compile = False
