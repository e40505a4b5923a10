# Finetune GPT-2 XL's weights on Tiny Shakespeare in GPT-2 BPE tokens (nanoGPT's preset; a few
# minutes on one A100).
#   python data/shakespeare/prepare.py && python train.py config/finetune_shakespeare.py
# init_from also takes gpt2, gpt2-medium, gpt2-large, or a local Hugging Face GPT-2 directory.
out_dir = "out-shakespeare"
eval_interval = 5
eval_iters = 40
wandb_log = False  # feel free to turn on
wandb_project = "shakespeare"
wandb_run_name = "ft"

dataset = "shakespeare"
init_from = "gpt2-xl"  # the largest GPT-2 model

# only save checkpoints if the validation loss improves
always_save_checkpoint = False

# the number of examples per iter:
# 1 batch_size * 32 grad_accum * 1024 tokens = 32,768 tokens/iter
# shakespeare has 301,966 tokens, so 1 epoch ~= 9.2 iters
batch_size = 1
gradient_accumulation_steps = 32
max_iters = 20

# finetune at constant LR
learning_rate = 3e-5
decay_lr = False
