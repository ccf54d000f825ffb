"""Use cases: the workflows that tie ``core``, ``storage`` and ``trainer`` together (no Streamlit).

- ``quiz``       take a quiz: start, answer, self-grade, submit, resume; the review queue; a student's results
- ``curation``   item edits and retirements, imports, quiz sets and their analytics
- ``training``   start, watch, stop and register fine-tuning runs (the only caller of ``trainer.launch``)
- ``accounts``   sign-in, registration, user management and the study history
- ``generation`` rate limit, stream and record one model generation (both study pages)
- ``classes``    classes, enrolment and join codes, assignments with due dates, class progress (role-checked)
- ``review``     a user's FSRS schedule: desired retention, "optimise my schedule", the coming week's workload

Pages call one function here per user action. Functions that touch the database take a keyword-only
``session``; a failed write raises :class:`StorageError`, which pages turn into a message.
"""

from storage.errors import StorageError

__all__ = ["StorageError"]
