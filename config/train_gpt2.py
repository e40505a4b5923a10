# GPT-2 (124M), nanoGPT's preset (~5 days on 8x A100 40GB), on FineWeb-Edu instead of OpenWebText.
# Prepare the data first (10B tokens, or fewer with --max_tokens), then on one node with 8 GPUs:
#   python data/fineweb/prepare.py
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py
wandb_log = True
wandb_project = "fineweb"
wandb_run_name = "gpt2-124M"

# 12 batch size * 1024 block size * 5 gradaccum * 8 GPUs = 491,520 tokens per step
batch_size = 12
block_size = 1024
gradient_accumulation_steps = 5 * 8  # summed over all ranks: 5 per GPU on 8 GPUs

# this makes total number of tokens be 300B
max_iters = 600000
lr_decay_iters = 600000

# eval stuff
eval_interval = 1000
eval_iters = 200
log_interval = 10

# weight decay
weight_decay = 1e-1

dataset = "fineweb"
compile = True  # a slow first step, then much faster ones on GPUs
