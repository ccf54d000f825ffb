"""Fine-tuning: ``python -m trainer`` (LoRA / QLoRA on the prompt format in core.prompts) and ``python -m trainer.evaluate``.

Light modules (no torch on import): ``config`` (TrainConfig, validation), ``cli`` (the parser),
``status`` (run-directory control files: status.json, STOP), ``checkpoint`` (finding a
resumable checkpoint), ``dataset`` (records -> examples). Heavy ones: ``train``, ``modeling``,
``callbacks``, ``card``, ``evaluate``. See trainer/README.md for the commands and the run directory.
"""
