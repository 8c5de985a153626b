# ml-playground: the user's verbs. Every target sets up .venv first; ARGS are Hydra overrides, e.g.
#   make exp1-dcgan ARGS="data=fruits360_real trainer=cpu_real"
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EDITABLE ?= -e  # `make setup EDITABLE=` installs the project as a plain (non-editable) package
ARGS ?=
TRAIN := $(PY) -m experiments.train
# $(call path_arg,KEY,VAR): the Hydra override KEY='<value of make variable VAR>', for every variable that takes a
# file, folder or name (IN, OUT, SRC, GT, VOC, LFW, IMAGES, CKPT, NAME, GALLERY, PAIRS, PROBES, TASK, MODEL). The one place they are quoted: the raw value
# ($(value ...), unexpanded) goes inside shell single quotes to core/overrides.py, which quotes it for Hydra, so any
# character a name can hold ('=', spaces, commas, brackets, quotes, '$', non-ASCII) reaches the entry unchanged.
# $(call opt_path_arg,KEY,VAR): the same, or nothing when VAR is empty (the entry's default applies).
path_arg = "$$($(PY) core/overrides.py $(1) '$(subst ','\'',$(value $(2)))')"
opt_path_arg = $(if $(value $(2)),$(call path_arg,$(1),$(2)))

.DEFAULT_GOAL := help
.PHONY: help setup lint docs test test-slow exp1-dcgan exp2-dcgan exp3-dcgan sweep sweep-dcgan mlflow-ui mlflow-server mlflow-upload register register-gallery serve bench-serve bench-dcgan clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-24s\033[0m %s\n", $$1, $$2}'
	@echo '  ARGS="..."               Hydra overrides for any target, e.g. ARGS="trainer=gpu" or ARGS="data=fruits360_real"'
	@echo '  IN OUT SRC GT VOC LFW IMAGES CKPT NAME GALLERY PAIRS PROBES TASK MODEL  any file or folder name as it is (e.g. CKPT=.../epoch=0-step=1.ckpt): quoted for Hydra here'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install $(EDITABLE) '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install the project with its pinned stack

lint: $(STAMP) ## ruff (lint + format check) and the import-layer contracts (lint-imports, pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

test: $(STAMP) ## run the test suite (real-data tests skip when ../shared/data is absent)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

docs: $(STAMP) ## the documentation site (MkDocs, docs/ + the generated report) into site/; a broken link fails it
	$(VENV)/bin/mkdocs build --strict --quiet

test-slow: $(STAMP) ## run the long tests (real-data trainings, full sweeps)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

exp1-dcgan: $(STAMP) ## DCGAN experiment 1: original net on simple scenes (fruits)
	$(TRAIN) experiment=exp1_dcgan_fruits $(ARGS)

exp2-dcgan: $(STAMP) ## DCGAN experiment 2: same net on complicated scenes (hard-hat workers)
	$(TRAIN) experiment=exp2_dcgan_hardhat $(ARGS)

exp3-dcgan: $(STAMP) ## DCGAN experiment 3: deeper net + training tricks on complicated scenes
	$(TRAIN) experiment=exp3_dcgan_hardhat_tricks $(ARGS)

SWEEP ?= grid
SWEPT := $(notdir $(wildcard conf/sweep_space/*_*))
sweep: $(STAMP) ## Hydra multirun over EXPERIMENT's own search space (SWEEP=grid|optuna), one MLflow parent run with the best trial; the same command again resumes an interrupted sweep
	@test -n "$(EXPERIMENT)" || { echo "make sweep: name the experiment, EXPERIMENT=<one of: $(SWEPT)>" >&2; exit 2; }
	$(TRAIN) experiment=$(EXPERIMENT) sweep=$(SWEEP) $(ARGS)

sweep-dcgan: EXPERIMENT := exp3_dcgan_hardhat_tricks
sweep-dcgan: sweep ## make sweep EXPERIMENT=exp3_dcgan_hardhat_tricks: batch size x learning rate of DCGAN experiment 3

# (the store paths are read with $$(pwd) in the shell: the checkout's path may hold spaces)
# Without the tracking server's job workers: measured here 532 MB and 2 processes instead of 2,577 MB and 10.
mlflow-ui: $(STAMP) ## MLflow UI on http://127.0.0.1:5000 over the local store; prints the link to each training experiment's runs and loss curves
	MLFLOW_DISABLE_TELEMETRY=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(PY) -m experiments.mlflow_ui --host 127.0.0.1 --port 5000 --workers 1 \
		--backend-store-uri "sqlite:///$$(pwd)/mlflow.db" --default-artifact-root "$$(pwd)/mlruns"

MLFLOW_SERVER_PORT ?= 5001
mlflow-server: $(STAMP) ## a real MLflow tracking server on 127.0.0.1:5001 (MLFLOW_SERVER_PORT=...; sqlite + artifacts in mlflow-server/); runs use it with ARGS="logger=mlflow_server"
	mkdir -p mlflow-server
	MLFLOW_DISABLE_TELEMETRY=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(PY) -m experiments.mlflow_ui server \
		--host 127.0.0.1 --port $(MLFLOW_SERVER_PORT) --workers 1 \
		--backend-store-uri "sqlite:///$$(pwd)/mlflow-server/mlflow.db" --artifacts-destination "$$(pwd)/mlflow-server/artifacts"

mlflow-upload: $(STAMP) ## upload the runs that went on in the local store while their MLflow server was away
	$(PY) -m experiments.upload_offline_runs $(ARGS)

register: $(STAMP) ## register TASK's best finished run's model (or RUN=<run id>'s) in the MLflow Model Registry under the task's name
	$(PY) -m experiments.register $(call opt_path_arg,task,TASK) $(if $(RUN),run_id=$(RUN)) $(ARGS)

register-gallery: $(STAMP) ## package GALLERY=<known people, <Name>/*.jpg> (default: make capture-faces' folder, else the built-in synthetic people) as an MLflow model named faces_gallery and register it
	$(PY) -m experiments.register_gallery $(call opt_path_arg,gallery,GALLERY) $(ARGS)

# The model: MODEL=<model URI>, else the registered model TASK at its alias champion, else its newest version.
SERVE_PORT ?= 5002
serve: $(STAMP) ## serve TASK's registered model (or MODEL=models:/<name>@champion) with mlflow models serve on http://127.0.0.1:5002/invocations (SERVE_PORT=...); docs/serving.md
	MLFLOW_DISABLE_TELEMETRY=true $(PY) -m experiments.serve $(call opt_path_arg,task,TASK) $(call opt_path_arg,model_uri,MODEL) port=$(SERVE_PORT) $(ARGS)

bench-serve: $(STAMP) ## request latency (median, p90) and requests/s of one built-in photo: the served detector vs its pyfunc called in process; ratio
	$(PY) -m benchmarks.serve_latency $(ARGS)

bench-dcgan: $(STAMP) ## s/epoch of make exp1-dcgan (FID/KID, grids, MLflow, checkpoints) vs a plain PyTorch loop saving the same grids and checkpoints; ratio
	$(PY) -m benchmarks.dcgan_epoch $(ARGS)

# ---- Face recognition (VGG16 transfer learning) -----------------------------------------------------
.PHONY: capture-faces vgg16-faces vgg16-faces-paper recognize eval-lfw eval-openset bench-vgg16 bench-recognize

capture-faces: $(STAMP) ## capture NAME's face crops into data/faces/NAME/ (OUT=<folder>/NAME/) from the camera (or SRC=<video>)
	$(PY) -m experiments.capture_faces $(call path_arg,name,NAME) $(call opt_path_arg,source,SRC) $(call opt_path_arg,out_dir,OUT) $(ARGS)

vgg16-faces: $(STAMP) ## face recognition by transfer learning (synthetic identities; ARGS="data=faces_real model.backbone=dlib_resnet")
	$(TRAIN) experiment=vgg16_faces $(ARGS)

vgg16-faces-paper: $(STAMP) ## the paper's own face pipeline (Haar, 32 px crops, rescale 1/255, RMSprop, 3 epochs)
	$(TRAIN) experiment=vgg16_faces_paper $(ARGS)

recognize: $(STAMP) ## name faces in IMAGES=<folder> (OUT=<folder>/recognitions.csv) or SRC=<video | camera | URL> (one name per track) by GALLERY=<known people> or CKPT=<checkpoint>; strangers: unknown
	$(PY) -m experiments.recognize $(call opt_path_arg,images,IMAGES) $(call opt_path_arg,source,SRC) $(call opt_path_arg,out_dir,OUT) $(call opt_path_arg,ckpt,CKPT) $(call opt_path_arg,gallery,GALLERY) $(ARGS)

eval-lfw: $(STAMP) ## LFW verification (View 2 k-fold) of the dlib descriptor on PAIRS=<folder> (default ../shared/data/lfw-pairs); last line JSON
	$(PY) -m experiments.eval_lfw $(call opt_path_arg,pairs,PAIRS) $(call opt_path_arg,out_dir,OUT) $(ARGS)

eval-openset: $(STAMP) ## open-set identification: GALLERY=<known folder> (default ../shared/data/faces), PROBES=<labelled folder> (default: other photos + LFW strangers); last line JSON
	$(PY) -m experiments.eval_openset $(call opt_path_arg,gallery,GALLERY) $(call opt_path_arg,probes,PROBES) $(call opt_path_arg,out_dir,OUT) $(ARGS)

bench-recognize: $(STAMP) ## photos/s of make recognize vs face_recognition's CLI on the same LFW gallery and probes (known named, strangers rejected); ratio
	@$(PY) -c "import face_recognition" 2>/dev/null || $(VENV)/bin/pip install --quiet --no-deps face_recognition==1.3.0
	$(PY) -m benchmarks.recognize_vs_face_recognition $(ARGS)

bench-vgg16: $(STAMP) ## seconds per head epoch: cached backbone features vs a full forward (VGG16, dlib)
	$(PY) -m benchmarks.vgg16_head $(ARGS)

# ---- Face detection (dlib HOG / MMOD, OpenCV Haar / YuNet) ---------------------------------------------
.PHONY: detect-faces compare-face-detectors bench-face-detectors

detect-faces: $(STAMP) ## crop every face in IN=<folder> (default: generated ID cards) into OUT=<folder> (default: outputs/detect_faces), faces.csv
	$(PY) -m experiments.detect_faces $(call opt_path_arg,in_dir,IN) $(call opt_path_arg,out_dir,OUT) $(ARGS)

compare-face-detectors: $(STAMP) ## precision/recall (IoU 0.3, 0.5), per-class recall, images/s, recall vs rotation, P/R/F1 vs score threshold [VOC=<folder>] [LFW=<Name>/*.jpg folder] -> reports/face_detectors/ (OUT=<folder>)
	$(PY) -m experiments.compare_face_detectors $(call opt_path_arg,voc,VOC) $(call opt_path_arg,lfw,LFW) $(call opt_path_arg,report_dir,OUT) $(ARGS)

bench-face-detectors: $(STAMP) ## images/s of make detect-faces on its default cards: serial vs processes vs threads (ratio); HOG vs Haar vs MMOD vs YuNet at 640x480
	$(PY) -m benchmarks.face_detectors $(ARGS)

# ---- Face-mask detection (YOLO) -------------------------------------------------------------------------
.PHONY: yolo-facemask convert-facemask predict-facemask monitor-facemask eval-monitor eval-facemask export-facemask bench-yolo bench-monitor

yolo-facemask: $(STAMP) ## YOLO face-mask detection (synthetic; ARGS="data=facemask_real trainer=cpu_real" for the real subset)
	$(TRAIN) experiment=yolo_facemask $(ARGS)

convert-facemask: $(STAMP) ## PASCAL VOC folder SRC=<folder with images/ annotations/> -> YOLO layout [OUT=<folder>], with a report
	$(PY) -m experiments.convert_voc $(call path_arg,src,SRC) $(call opt_path_arg,out,OUT) $(ARGS)

predict-facemask: $(STAMP) ## boxes + unmasked-face count per frame for SRC=<images folder or video> (default: built-in images) [CKPT=...] [OUT=<folder>]
	$(PY) -m experiments.predict_facemask $(call opt_path_arg,source,SRC) $(call opt_path_arg,ckpt,CKPT) $(call opt_path_arg,out_dir,OUT) $(ARGS)

monitor-facemask: $(STAMP) ## track people in SRC=<video, camera index or rtsp/http(s) URL>, one alert per unmasked person, zone and line counts [CKPT=...] [OUT=<folder>]; last line JSON
	$(PY) -m experiments.monitor_facemask $(call opt_path_arg,source,SRC) $(call opt_path_arg,ckpt,CKPT) $(call opt_path_arg,out_dir,OUT) $(ARGS)

eval-monitor: $(STAMP) ## HOTA, IDF1, ID switches and counts vs truth of monitor-facemask on SRC=<clip> GT=<gt.txt> (default: a generated clip) [CKPT=...] [OUT=...]; ARGS="detections=truth"; last line JSON
	$(PY) -m experiments.eval_monitor $(call opt_path_arg,source,SRC) $(call opt_path_arg,gt,GT) $(call opt_path_arg,ckpt,CKPT) $(call opt_path_arg,out_dir,OUT) $(ARGS)

eval-facemask: $(STAMP) ## mAP50, mAP50-95, AP50 per class of CKPT (default: best of the newest run) on VOC=<folder> (SPLIT=test: its held-out photos), with ultralytics' PR/F1 curves, confusion matrix, val batches; last line JSON
	$(PY) -m experiments.eval_facemask $(call path_arg,voc,VOC) $(call opt_path_arg,ckpt,CKPT) $(if $(SPLIT),split=$(SPLIT)) $(ARGS)

export-facemask: $(STAMP) ## CKPT (default: best of the newest run) as facemask.pt for yolo predict/track/export + FORMAT=<onnx,torchscript,…>, parity-checked on IMAGES=<folder> [OUT=<folder>]; last line JSON
	$(PY) -m experiments.export_facemask 'formats=[$(FORMAT)]' $(call opt_path_arg,ckpt,CKPT) $(call opt_path_arg,out_dir,OUT) $(call opt_path_arg,images,IMAGES) $(ARGS)

bench-yolo: $(STAMP) ## s/epoch of make yolo-facemask ARGS="data=facemask_real trainer=cpu_real" vs ultralytics' DetectionTrainer, val mAP50 of both; ratio
	$(PY) -m benchmarks.yolo_facemask_train $(ARGS)

bench-monitor: $(STAMP) ## frames/s of make monitor-facemask vs yolo track on ../shared/data/video, same weights, size and tracker; ratio
	$(PY) -m benchmarks.monitor_facemask $(ARGS)

# ---- Reports and web ----------------------------------------------------------------------------------------
.PHONY: report export-web web-deps web demo
WEB_PORT ?= 4173
WEB_DEPS := web/node_modules/.package-lock.json
# Overrides for every training of `make demo` (its sizes are the cpu_small profile's, see conf/trainer/).
DEMO_ARGS ?=

report: $(STAMP) ## reports/README.md from the MLflow store: the best finished run of each configuration, demo-scale runs marked ("not run yet" where a run is missing)
	$(PY) -m experiments.report $(ARGS)

export-web: $(STAMP) ## ONNX models, built-in example images and web/public/models/manifest.json for the playground, each model checked against PyTorch
	$(PY) -m experiments.export_web $(ARGS)

# npm ci: exactly the lock's packages, and the lock left as it is (it lists every platform's optional binaries)
$(WEB_DEPS): web/package-lock.json
	cd web && npm ci --no-audit --no-fund

web-deps: $(WEB_DEPS) ## the playground's npm packages (vite, onnxruntime-web, playwright-core) from web/package-lock.json

web: $(WEB_DEPS) ## build the playground and serve it on http://127.0.0.1:4173 (WEB_PORT=...; after make export-web)
	cd web && npm run build && npm run preview -- --port $(WEB_PORT)

# The demo's report goes under outputs/ (git-ignored): reports/ holds the project's measured report (make report).
DEMO_REPORT := outputs/demo/report
demo: $(STAMP) ## every application end to end on the built-in data, CPU-sized, then report + export-web (about 8 min on 2 cores)
	@set -e; start=$$(date +%s); \
	for experiment in exp1_dcgan_fruits exp2_dcgan_hardhat exp3_dcgan_hardhat_tricks yolo_facemask vgg16_faces; do \
		echo "== demo: training $$experiment"; $(TRAIN) experiment=$$experiment $(DEMO_ARGS); \
	done; \
	echo "== demo: batch size x learning rate sweep of exp3 (Hydra multirun; 1 epoch a trial: the mechanism, not a result)"; \
	$(TRAIN) experiment=exp3_dcgan_hardhat_tricks sweep=grid epochs=1 $(DEMO_ARGS); \
	echo "== demo: dlib face detection on the built-in ID cards"; $(PY) -m experiments.detect_faces detector=hog progress=false; \
	echo "== demo: face detectors compared (HOG, Haar; MMOD takes minutes per card on a CPU; make compare-face-detectors adds rotations)"; \
	$(PY) -m experiments.compare_face_detectors "use=[hog,haar]" rotations.enabled=false progress=false 'report_dir=$${paths.root_dir}/$(DEMO_REPORT)/face_detectors'; \
	echo "== demo: report and web export"; $(PY) -m experiments.report 'out_dir=$${paths.root_dir}/$(DEMO_REPORT)'; $(PY) -m experiments.export_web; \
	echo; echo "Demo done in $$(( $$(date +%s) - start )) s."; \
	echo "  Report:      $(CURDIR)/$(DEMO_REPORT)/README.md (figures in $(DEMO_REPORT)/figures/)"; \
	echo "  MLflow UI:   make mlflow-ui, then open http://127.0.0.1:5000"; \
	echo "  Playground:  make web, then open http://127.0.0.1:$(WEB_PORT)"

clean: ## remove generated data, logs, caches and the local MLflow store
	rm -rf data logs .cache mlruns mlflow.db mlflow-server outputs
