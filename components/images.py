"""The container images the components run in.

These are placeholders: `pipelines.compile` rewrites every executor's image to the
tags given by `make compile IMAGE=... GPU_IMAGE=...` (by default the current commit),
so a compiled pipeline always points at the images built from the same tree.
The images install kfp from requirements.lock, so every component sets
`install_kfp_package=False` and nothing is pip-installed at run time.
"""

CPU_IMAGE = "fer-pipeline-cpu:dev"  # ingest, split, evaluation, registration
GPU_IMAGE = "fer-pipeline-gpu:dev"  # frozen training and fine-tuning
