# Watching and comparing runs: TensorBoard, the run index, the report in a browser,
# templates and schedules on Vertex AI. Included by the Makefile (after mk/cloud.mk);
# uses its PY, VENV and setup. docs/watching.md walks through it.

CONFIG ?= config/submit.env
DRY_RUN ?=
# tensorboard: where the event files are (every run under it is one TensorBoard run)
LOGDIR ?= build
TB_PORT ?= 6006
# runs: the run index (make run-local writes build/local/runs.json, fer-pipeline run build/runs.json)
RUNS ?= build/local/runs.json
LAST ?= 2
# report-screenshot: the newest report under build/ unless REPORT= is given
REPORT ?= $(shell ls -t build/local/pipeline-root/*/evaluate/report build/*/evaluation/report.html 2>/dev/null | head -n 1)
SHOT ?= build/report.png
SHOT_WIDTH ?= 1000
# schedule: CRON="TZ=Europe/Amsterdam 0 3 * * 1" (required), SCHEDULE_NAME=
CRON ?=
SCHEDULE_NAME ?=
# publish: TAGS=v1,latest replaces the default tags (the compiled commit and latest); passed whole as
# TEMPLATE_TAGS, so a tag with a space is refused by name, not split into two tags
TAGS ?=

.PHONY: tensorboard runs-compare report-check report-screenshot publish schedule

tensorboard: setup ## Serve the TensorBoard logs under LOGDIR (default build/) on http://127.0.0.1:$(TB_PORT)
	@test -x $(VENV)/bin/tensorboard || { echo "tensorboard is not installed in $(VENV): reinstall the pinned dependencies (rm -f $(STAMP) && make setup)" >&2; exit 2; }
	$(VENV)/bin/tensorboard --logdir $(call sq,$(LOGDIR)) --host 127.0.0.1 --port $(call sq,$(TB_PORT))

runs-compare: setup ## The last LAST runs side by side (RUNS=build/local/runs.json; fer-pipeline runs compare --help)
	$(VENV)/bin/fer-pipeline runs compare --index $(call sq,$(RUNS)) -n $(call sq,$(LAST))

report-check: setup ## Open REPORT (default: the newest) in headless Chromium: images, class rows, console errors
	@test -n $(call sq,$(REPORT)) || { echo "no report under build/: make run-local first, or REPORT=path/to/report.html" >&2; exit 2; }
	$(PY) tests/browser.py check $(call sq,$(REPORT))

report-screenshot: setup ## Full-page PNG of REPORT (default: the newest) with headless Chromium: SHOT=build/report.png
	@test -n $(call sq,$(REPORT)) || { echo "no report under build/: make run-local first, or REPORT=path/to/report.html" >&2; exit 2; }
	$(PY) tests/browser.py screenshot $(call sq,$(REPORT)) $(call sq,$(SHOT)) --width $(SHOT_WIDTH)

publish: setup ## Upload build/pipeline.yaml to the Artifact Registry KFP repository (TEMPLATE_REPOSITORY), tags: commit, latest; DRY_RUN=1
	$(PY) -m pipelines.publish --config $(call sq,$(CONFIG)) $(if $(TAGS),--set $(call sq,TEMPLATE_TAGS=$(TAGS))) $(call switch,DRY_RUN,--dry-run)

schedule: setup ## Create a Vertex AI schedule that retrains: CRON="TZ=Europe/Amsterdam 0 3 * * 1", SCHEDULE_NAME=, DRY_RUN=1
	@test -n $(call sq,$(CRON)) || { echo 'set CRON, e.g. make schedule CRON="TZ=Europe/Amsterdam 0 3 * * 1" (five fields, UTC without TZ=)' >&2; exit 2; }
	$(PY) -m pipelines.schedule --config $(call sq,$(CONFIG)) --cron $(call sq,$(CRON)) $(if $(SCHEDULE_NAME),--name $(call sq,$(SCHEDULE_NAME))) $(call switch,DRY_RUN,--dry-run)
