# The two commands of the README:  `make run`  and  `make test`.
PY := .venv/bin/python
PORT ?= 8501

.PHONY: run test prepare

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
