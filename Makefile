# The two commands of the README: `make demo` and `make test`. Each sets up what it needs first.
.PHONY: setup demo test test-long lint stack-up stack-down clean

VENV := .venv/bin

setup:
	@bash scripts/setup.sh

demo: setup
	@$(VENV)/listings demo

test: setup
	$(VENV)/ruff check .
	$(VENV)/pytest -q

test-long: setup
	$(VENV)/pytest -q --long

lint: setup
	$(VENV)/ruff check .

stack-up: setup
	$(VENV)/listings stack up

stack-down:
	$(VENV)/listings stack down

clean: stack-down
	rm -rf .stack
