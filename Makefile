# The two commands of the README:  `make run`  and  `make test`.
PY := .venv/bin/python
PORT ?= 8501

.PHONY: run test prepare serve

run:
	@bash scripts/bootstrap.sh run
	@$(PY) -m core.data prepare --if-stale
	@echo "==> Medical reasoning study assistant: http://localhost:$(PORT)"
	@$(PY) -m streamlit run app/main.py --server.port $(PORT) --server.headless true

test:
	@bash scripts/bootstrap.sh test
	@$(PY) -m pytest $(PYTEST_ARGS)
	@bash scripts/audit.sh

prepare:
	@bash scripts/bootstrap.sh run
	@$(PY) -m core.data prepare

# llama.cpp's server for a class (parallel slots, continuous batching), the adapters loaded as GGUF LoRAs.
# Builds llama-server once (about 30 min on 2 cores, cached outside the clone). SERVE_ARGS, e.g. --port 8080 --parallel 8.
serve:
	@bash scripts/bootstrap.sh run
	@bash scripts/build_llama_server.sh
	@$(PY) -m core.llamacpp serve $(SERVE_ARGS)
