# Train on your own text (a .txt file or a directory of them) with a BPE trained on it, on a CPU:
#   python data/my_text/prepare.py --input=path/to/my_texts
#   python train.py config/train_my_text.py
#   python sample.py --out_dir=out-my-text --start="Once upon a time"
# --tokenizer=char (small alphabets, tiny corpora) or --tokenizer=gpt2 (large corpora) work the
# same way.
out_dir = "out-my-text"
dataset = "my_text"  # data/my_text, or any path to a prepared directory
eval_interval = 250
eval_iters = 20
log_interval = 50
always_save_checkpoint = False

gradient_accumulation_steps = 1
batch_size = 12
block_size = 128  # BPE tokens carry ~3 characters each: 128 tokens see as far as 384 characters

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.1  # a small corpus overfits quickly

learning_rate = 1e-3
max_iters = 2000
lr_decay_iters = 2000
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 100

device = "cpu"
