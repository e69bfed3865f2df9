# Two entry points, both self-installing on a fresh machine:
#   make demo   synthetic multi-view source -> shards -> streamed epoch
#   make test   the test suite
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTHON  ?= python3
STAMP   := $(VENV)/.installed

.PHONY: demo test sysdeps clean

# The FFmpeg CLI is the independent reference the tests compare against.
sysdeps:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
	  else echo "vidshard: please install the FFmpeg CLI (ffmpeg, ffprobe), e.g. apt-get install ffmpeg" >&2; exit 1; fi; }

# torch/torchvision are pinned first to the releases this machine keeps on disk
# (a CPU-only machine otherwise downloads a multi-GB build); pyproject keeps a range.
# pip's own chatter (build-backend notices, index warnings) goes to a log, shown on failure.
$(STAMP): pyproject.toml
	@echo "vidshard: installing into $(VENV) (log: $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >$(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1 >>$(VENV)/install.log 2>&1 \
	  || $(PY) -m pip install -q torch torchvision >>$(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@$(PY) -m pip install -q -e '.[test]' >>$(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $@

demo: $(STAMP) sysdeps
	$(VENV)/bin/vidshard demo --config configs/demo.yaml

test: $(STAMP) sysdeps
	$(PY) -m pytest -q -n auto --dist loadscope  # one worker per core; a module's tests share a worker (its servers, clusters)

clean:
	rm -rf $(VENV) demo-out bench-out
