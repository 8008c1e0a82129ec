# The two commands of the README (`make demo`, `make test`) each do the set-up they need.
VENV ?= .venv
PY := $(VENV)/bin/python
export LV_VENV := $(VENV)

.PHONY: setup demo demo-cls test test-fast clean-venv gpu-check

setup:
	@bash tools/setup_env.sh

# the main demo: DeepLabV3 as K=4 InfoPro modules vs E2E on the generated segmentation set
demo: setup
	$(PY) tools/seg_demo.py

# the classification demo: ResNet-32, K=4 greedy, on the generated shapes set
demo-cls: setup
	$(PY) tools/misc/make_demo_data.py cls
	$(PY) tools/train.py configs/cls/cifar_resnet32_shapes_greedy_k4.py

test: setup
	$(PY) -m pytest tests

# the tests that start no processes and train nothing (under 5 minutes on 2 cores)
test-fast: setup
	$(PY) -m pytest -m "not slow" tests

# the one-command GPU check: no set-up, runs on a bare machine with torch, torchvision and
# timm; needs work_dirs/gpu_wheels (python tools/analysis/gpu_check.py --fetch-wheels); results in $OUT
gpu-check:
	bash tools/analysis/gpu_check.sh

clean-venv:
	rm -rf $(VENV)
