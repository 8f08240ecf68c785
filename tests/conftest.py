"""What every test module shares: the `slow` marker and the fixtures several modules use.

A test is slow when it trains a model, runs a whole recipe or sweep, or starts another runtime: it
uses one of SLOW_FIXTURES (each builds real models once per module) or is marked itself.
`pytest -m "not slow"` runs the rest, the unit tests of the engine and every bad-input check, in
a couple of minutes.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from compress.data.loading import DataSettings, load_task_data
from compress.models.loading import load_tokenizer

SLOW_FIXTURES = {"finished_sweep", "recipe_bench", "int8_run", "quickstart_run", "dropped_minilm", "minilm_on_reviews", "reviews"}


def pytest_configure(config):
    """Each of N pytest-xdist workers computes on its share of the cores: two workers each spinning two
    threads on two cores trained MiniLM 4-5x slower than with one thread each. The environment variable
    carries the share to the processes tests start (the command line, memory measurements)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def module_folder(request, tmp_path_factory):
    """Makes folders for a module's shared fixtures and removes them once the module's tests are done, unless one
    of them failed: the suite writes several GB of models, and CI's disk is shared. (pyproject's
    tmp_path_retention_policy does the same for each test's tmp_path.)"""
    failed_before = request.session.testsfailed
    made = []

    def make(name: str):
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield make
    if request.session.testsfailed == failed_before:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded MiniLM's tokenizer."""
    return load_tokenizer("minilm-l6")


@pytest.fixture
def one_thread():
    """Tiny models train many times faster on one thread than on two shared with other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reviews():
    """64 training and 32 dev reviews of the embedded Rotten Tomatoes data."""
    settings = DataSettings(source="embedded", max_train_examples=64, max_eval_examples=32)
    return load_task_data("rotten-tomatoes", settings)
