# Two commands do all set-up on a fresh machine with Python 3.11+ and make:
#   make demo   virtualenv from the lock file, embedded PostgreSQL, migrate, demo data, admin on :8000
#   make test   the whole suite against a real PostgreSQL (embedded, or DATABASE_URL)
# and one serves production (README, Deployment):
#   make serve  gunicorn with the production settings (DEBUG off; SECRET_KEY etc. from the environment)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo serve test lint format bench mutants install dbshell lock clean-db schema

$(STAMP): requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	touch $(STAMP)

install: $(STAMP)

# The demo is a local development server: DEBUG on (static files straight from the apps, plain HTTP,
# the published demo key) and the demo's webhook secrets. Production sets its own (make serve).
demo: export DEBUG = on
demo: export STRIPE_WEBHOOK_SECRET ?= whsec_billing_ops_demo
demo: export PADDLE_WEBHOOK_SECRET ?= pdl_ntfset_billing_ops_demo
demo: $(STAMP)
	$(BIN)/python manage.py migrate --verbosity 0
	$(BIN)/python manage.py demo_data --if-empty
	$(BIN)/python manage.py runserver --noreload 127.0.0.1:8000

# Production: the settings refuse to start without SECRET_KEY; check --deploy fails on any warning;
# collectstatic writes the hashed, compressed files WhiteNoise serves. Run migrate before (README).
serve: $(STAMP)
	$(BIN)/python manage.py check --deploy --fail-level WARNING
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	exec $(BIN)/gunicorn

# Lint: ruff's checks and its formatter (pyproject.toml, [tool.ruff]); `make format` applies both.
# Then mypy with django-stubs on the services and selectors ([tool.mypy]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: $(STAMP)
	scripts/ensure-chromium
	$(BIN)/python -m pytest

# Mutation testing (scripts/mutants_catalogue.py): plants each bug, runs the tests meant to catch it,
# prints the score and the survivors. Not part of `make test`; MUTANTS="id ..." runs some only.
mutants: $(STAMP)
	scripts/ensure-chromium
	$(BIN)/python scripts/mutants.py $(if $(MUTANTS),--only $(MUTANTS))

bench: $(STAMP)
	$(BIN)/python bench/triggers.py
	$(BIN)/python bench/consume.py
	$(BIN)/python bench/webhooks.py

# Schema diagram of the models (django-extensions graph_models): docs/schema.dot always, and
# docs/schema.svg when Graphviz's `dot` is installed (apt-get install graphviz).
schema: $(STAMP)
	mkdir -p docs
	DEBUG=on $(BIN)/python manage.py graph_models usage billing --group-models --dot -o docs/schema.dot
	@sed -i '/^  \/\/ Created: /d' docs/schema.dot  # no timestamp: the file only changes with the models
	if command -v dot >/dev/null; then dot -Tsvg docs/schema.dot -o docs/schema.svg; else echo "no Graphviz: docs/schema.dot only"; fi

dbshell: $(STAMP)
	$(BIN)/python manage.py dbshell

# Re-pin after editing pyproject.toml (needs pip-tools in the venv).
lock:
	$(BIN)/python -m pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --extra test --generate-hashes --strip-extras -o requirements.lock pyproject.toml

# Drop the embedded database folder (the demo data goes with it).
clean-db:
	rm -rf .pgdata
