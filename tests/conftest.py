"""Shared test setup: offline, deterministic, one thread per process (the CI box has 2 cores)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# GGUF checkpoints (the real SmolLM2 of tests/real) are converted once into the git-ignored .cache/
os.environ.setdefault("BLOCKDISTILL_CACHE", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                         ".cache", "blockdistill"))

import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

torch.set_num_threads(int(os.environ.get("BLOCKDISTILL_TEST_THREADS", "2")))

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=40)
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=40,
                          derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")
