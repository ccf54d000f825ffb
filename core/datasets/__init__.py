"""One reader per raw source; each turns its files into canonical :class:`core.records.Record` objects.

Reasoning corpus: :mod:`medical_o1` (offline sample and the original release, local or hub),
:mod:`huatuo_demo`, :mod:`casimedicos` (train/dev), :mod:`seed` (the seed project's
instruction/input/output files). Held-out bank: :mod:`medqa`, :mod:`medmcqa`, :mod:`mmlu`,
:mod:`pubmedqa`, :mod:`casimedicos` (official test). :mod:`core.data` runs them all.
"""
