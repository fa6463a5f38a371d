# The two commands of the README: `make demo` and `make test`. Each sets up what it needs first.
.PHONY: setup demo test test-long lint train stack-up stack-down clean

VENV := .venv/bin

setup:
	@bash scripts/setup.sh

demo: setup
	@$(VENV)/listings demo

test: setup
	$(VENV)/ruff check .
	$(VENV)/pytest -q --durations=15

test-long: setup
	$(VENV)/ruff check .
	$(VENV)/pytest -q --long --durations=15

lint: setup
	$(VENV)/ruff check .

# fine-tune the classifier (or reuse the cached run) and export a new Triton model version
train: setup
	$(VENV)/listings train

stack-up: setup
	$(VENV)/listings stack up

stack-down:
	@if [ -x $(VENV)/listings ]; then $(VENV)/listings stack down; else echo "no $(VENV)/listings: no stack to stop"; fi

clean: stack-down
	rm -rf "$${LISTINGS_STATE_DIR:-.stack}"
