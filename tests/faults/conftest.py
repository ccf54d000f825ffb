"""Fault-test fixtures: the trainer tests' tiny Llama (with tokenizer) and prepared-data folder."""

from tests.trainer.conftest import data_dir, tiny_model_dir  # noqa: F401  (re-exported fixtures)
