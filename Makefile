# Two commands: `make quickstart` (train a Shakespeare GPT on this CPU and sample it) and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: quickstart test browser lint bench clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

data/shakespeare_char/train.bin: | $(VENV)/.installed
	$(PY) data/shakespeare_char/prepare.py

# the CPU speedrun's best recipe within 90 s (config/speedrun_90s.py, docs/training.md), scored on the whole val
# split, then sampled; the demo starts over each time (--overwrite=True): a second run replaces the first one's
quickstart: $(VENV)/.installed data/shakespeare_char/train.bin
	$(PY) train.py config/speedrun_90s.py --overwrite=True
	$(PY) train.py config/speedrun_90s.py --eval_only=True
	$(PY) sample.py --out_dir=out-speedrun-90s --start="ROMEO:" --num_samples=2 --max_new_tokens=300

bench: $(VENV)/.installed data/shakespeare_char/train.bin
	$(PY) bench.py all

test: $(VENV)/.installed-dev
	$(PY) -m pytest tests -n auto --dist loadfile --no-loadscope-reorder

# Debian's Chromium, which tests/test_attention_page.py drives with Playwright (it skips without
# one); apt as root, as CI runs
browser:
	test -x /usr/bin/chromium || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) out-* wandb
