# The two commands of the README (`make demo`, `make test`) each do the set-up they need.
VENV ?= .venv
PY := $(VENV)/bin/python
export LV_VENV := $(VENV)

.PHONY: setup demo test bench clean-venv

setup:
	@bash tools/setup_env.sh

demo: setup
	$(PY) tools/misc/make_demo_data.py cls
	$(PY) tools/train.py configs/cls/cifar_resnet32_shapes_greedy_k4.py

test: setup
	$(PY) -m pytest tests

clean-venv:
	rm -rf $(VENV)
