"""Fine-tuning: ``python -m trainer`` (LoRA / QLoRA on the prompt format in core.prompts) and ``python -m trainer.evaluate``.

Light modules (no torch on import): ``config`` (TrainConfig), ``cli`` (parser), ``status`` (run
directory control files), ``checkpoint``. Heavy ones: ``train``, ``modeling``, ``callbacks``,
``evaluate``.
"""
