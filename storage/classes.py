"""Classes, enrolments, assignments, and the per-user FSRS review settings.

Rules enforced here (whatever page or service calls): a class belongs to an active instructor or
admin; only active accounts are enrolled, once per class; a join code is unique; an assignment's
quiz set is published, it opens before it is due, and its settings are valid. Each function checks
everything first and writes nothing when something is wrong, raising :class:`ClassError` with every
problem in one message. Who may see or change a class is decided in ``services.classes``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from storage import rows
from storage.models import (
    LATE_POLICIES, QUIZ_MODES, Assignment, Attempt, AttemptItem, ClassMember, QuizSet, ReviewSettings, StudyClass,
    User,
)

JOIN_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
"""No 0/O, 1/I/L: a code read aloud or off a slide is typed right."""
JOIN_CODE_LENGTH = 8
CLASS_STAFF_ROLES = ("instructor", "admin")


class ClassError(ValueError):
    """A class, enrolment or assignment request that cannot be done; the message is safe to show."""


def normalise_join_code(raw: str) -> str:
    return "".join(str(raw or "").split()).upper().replace("-", "")


def new_join_code() -> str:
    return "".join(secrets.choice(JOIN_CODE_ALPHABET) for _ in range(JOIN_CODE_LENGTH))


def _active_user(session: Session, user_id: int, what: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise ClassError(f"The {what} account (id {user_id}) does not exist.")
    if not user.active:
        raise ClassError(f"The {what} account {user.username!r} has been deactivated.")
    return user


# -- classes ------------------------------------------------------------------------------------------------------


def create_class(*, session: Session, owner_id: int, name: str) -> StudyClass:
    """A new class with a fresh join code. The owner must be an active instructor or admin."""
    problems = []
    name = (name or "").strip()
    if not name:
        problems.append("A class needs a name.")
    elif len(name) > 200:
        problems.append("Class names may have at most 200 characters.")
    try:
        owner = _active_user(session, owner_id, "owner's")
        if owner.role not in CLASS_STAFF_ROLES:
            problems.append("Only instructors and admins can own a class.")
    except ClassError as exc:
        problems.append(str(exc))
    if problems:
        raise ClassError(" ".join(problems))
    for _ in range(5):  # a clash among 31**8 codes is rare; retry rather than fail
        code = new_join_code()
        if get_class_by_code(session=session, join_code=code) is None:
            break
    return rows.save(session, StudyClass(owner_id=owner_id, name=name, join_code=code))


def get_class(*, session: Session, class_id: int) -> StudyClass | None:
    return session.get(StudyClass, class_id)


def get_class_by_code(*, session: Session, join_code: str) -> StudyClass | None:
    code = normalise_join_code(join_code)
    if not code or "\x00" in code:
        return None
    return session.exec(select(StudyClass).where(StudyClass.join_code == code)).first()


def list_classes(*, session: Session, owner_id: int | None = None) -> list[StudyClass]:
    """Classes by name (one owner's, or all)."""
    query = select(StudyClass)
    if owner_id is not None:
        query = query.where(StudyClass.owner_id == owner_id)
    return list(session.exec(query.order_by(col(StudyClass.name), col(StudyClass.id))))


def classes_of_member(*, session: Session, user_id: int) -> list[StudyClass]:
    query = (select(StudyClass).join(ClassMember, col(ClassMember.class_id) == col(StudyClass.id))
             .where(ClassMember.user_id == user_id).order_by(col(StudyClass.name)))
    return list(session.exec(query))


def delete_class(*, session: Session, class_id: int) -> bool:
    """Delete a class with its enrolments and assignments (attempts are kept, unlinked)."""
    return rows.delete(session, StudyClass, class_id)


# -- enrolment ----------------------------------------------------------------------------------------------------


def members(*, session: Session, class_id: int) -> list[User]:
    """The class's students by username (deactivated ones included: their work still counts)."""
    query = (select(User).join(ClassMember, col(ClassMember.user_id) == col(User.id))
             .where(ClassMember.class_id == class_id).order_by(col(User.username)))
    return list(session.exec(query))


def is_member(*, session: Session, class_id: int, user_id: int) -> bool:
    query = select(func.count()).select_from(ClassMember).where(ClassMember.class_id == class_id,
                                                                ClassMember.user_id == user_id)
    return session.exec(query).one() > 0


def enrol(*, session: Session, class_id: int, user_ids: Sequence[int]) -> list[ClassMember]:
    """Enrol students, all or none: an unknown or deactivated account or a duplicate refuses the lot."""
    study_class = session.get(StudyClass, class_id)
    if study_class is None:
        raise ClassError("This class does not exist.")
    problems: list[str] = []
    wanted = list(dict.fromkeys(user_ids))
    if not wanted:
        problems.append("Choose at least one student to enrol.")
    for user_id in wanted:
        try:
            user = _active_user(session, user_id, "student's")
        except ClassError as exc:
            problems.append(str(exc))
            continue
        if is_member(session=session, class_id=class_id, user_id=user_id):
            problems.append(f"{user.username} is already enrolled in {study_class.name}.")
        elif user_id == study_class.owner_id:
            problems.append(f"{user.username} owns this class and cannot be enrolled in it.")
    if problems:
        raise ClassError(" ".join(problems))
    added = [ClassMember(class_id=class_id, user_id=user_id) for user_id in wanted]
    session.add_all(added)
    try:
        session.commit()
    except IntegrityError:  # someone enrolled the same student a moment ago
        session.rollback()
        raise ClassError("One of these students was enrolled a moment ago; nothing was changed.") from None
    for member in added:
        session.refresh(member)
    return added


def unenrol(*, session: Session, class_id: int, user_id: int) -> bool:
    member = session.exec(select(ClassMember).where(ClassMember.class_id == class_id,
                                                    ClassMember.user_id == user_id)).first()
    if member is None:
        return False
    session.delete(member)
    session.commit()
    return True


# -- assignments ------------------------------------------------------------------------------------------------


def assignment_problems(values: dict[str, Any]) -> list[str]:
    problems = []
    if not str(values.get("title") or "").strip():
        problems.append("An assignment needs a title.")
    elif len(str(values["title"])) > 200:
        problems.append("Titles may have at most 200 characters.")
    opens_at, due_at = values.get("opens_at"), values.get("due_at")
    if not isinstance(opens_at, datetime) or not isinstance(due_at, datetime):
        problems.append("An assignment needs an opening time and a due date.")
    elif due_at <= opens_at:
        problems.append("The due date must be after the opening time.")
    if values.get("mode") not in QUIZ_MODES:
        problems.append(f"Mode must be one of {', '.join(QUIZ_MODES)}.")
    if values.get("time_limit_s") is not None and values["time_limit_s"] <= 0:
        problems.append("The time limit must be a positive number of seconds.")
    if values.get("attempts_allowed") is not None and values["attempts_allowed"] < 1:
        problems.append("Attempts allowed must be at least 1 (or empty for unlimited).")
    if values.get("late_policy") not in LATE_POLICIES:
        problems.append(f"Late submissions must be one of {', '.join(LATE_POLICIES)}.")
    return problems


def create_assignment(
    *, session: Session, class_id: int, quiz_set_id: int, created_by_id: int, title: str, opens_at: datetime,
    due_at: datetime, mode: str = "tutor", time_limit_s: int | None = None, attempts_allowed: int | None = None,
    late_policy: str = "accept",
) -> Assignment:
    """Assign a published quiz set to a class (times are stored in UTC)."""
    values = dict(title=(title or "").strip(), opens_at=opens_at, due_at=due_at, mode=mode,
                  time_limit_s=time_limit_s if mode == "exam" else None, attempts_allowed=attempts_allowed,
                  late_policy=late_policy)
    problems = assignment_problems(values)
    if session.get(StudyClass, class_id) is None:
        problems.append("This class does not exist.")
    quiz_set = session.get(QuizSet, quiz_set_id)
    if quiz_set is None:
        problems.append("This quiz set does not exist.")
    elif not quiz_set.published:
        problems.append("Only a published quiz set can be assigned; publish it first.")
    if problems:
        raise ClassError(" ".join(problems))
    return rows.save(session, Assignment(class_id=class_id, quiz_set_id=quiz_set_id, created_by_id=created_by_id,
                                         **values))


def get_assignment(*, session: Session, assignment_id: int) -> Assignment | None:
    return session.get(Assignment, assignment_id)


def class_assignments(*, session: Session, class_id: int) -> list[Assignment]:
    query = select(Assignment).where(Assignment.class_id == class_id).order_by(col(Assignment.due_at),
                                                                                col(Assignment.id))
    return list(session.exec(query))


def assignments_for_student(*, session: Session, user_id: int) -> list[Assignment]:
    """Assignments of every class the user is enrolled in, soonest due first."""
    query = (select(Assignment).join(ClassMember, col(ClassMember.class_id) == col(Assignment.class_id))
             .where(ClassMember.user_id == user_id).order_by(col(Assignment.due_at), col(Assignment.id)))
    return list(session.exec(query))


def delete_assignment(*, session: Session, assignment_id: int) -> bool:
    return rows.delete(session, Assignment, assignment_id)


def assignment_attempts(*, session: Session, assignment_id: int) -> list[Attempt]:
    """Every attempt at the assignment (any status), oldest first."""
    query = (select(Attempt).where(Attempt.assignment_id == assignment_id)
             .order_by(col(Attempt.started_at), col(Attempt.id)))
    return list(session.exec(query))


def count_assignment_attempts(*, session: Session, assignment_id: int, user_id: int) -> int:
    query = select(func.count()).select_from(Attempt).where(Attempt.assignment_id == assignment_id,
                                                            Attempt.user_id == user_id)
    return session.exec(query).one()


# -- peer difficulty ------------------------------------------------------------------------------------------


def first_answers(*, session: Session, item_ids: Iterable[str] | None = None) -> dict[str, tuple[int, int]]:
    """Item id -> (users who answered it, users whose first answer was correct), over all users.

    A first answer is a user's earliest graded answer to the item: a multiple-choice choice, or a
    self-grade of a written answer (only ``correct`` counts as correct).
    """
    query = (select(AttemptItem.item_id, Attempt.user_id, AttemptItem.answered_at, AttemptItem.correct,
                    AttemptItem.self_grade)
             .join(Attempt, col(Attempt.id) == col(AttemptItem.attempt_id))
             .where(col(AttemptItem.answered_at).is_not(None))
             .where((col(AttemptItem.correct).is_not(None)) | (col(AttemptItem.self_grade).is_not(None))))
    if item_ids is not None:
        query = query.where(col(AttemptItem.item_id).in_(list(item_ids)))
    first: dict[tuple[str, int], tuple[datetime, bool]] = {}
    for item_id, user_id, answered_at, correct, self_grade in session.exec(query):
        right = bool(correct) if correct is not None else self_grade == "correct"
        key = (item_id, user_id)
        if key not in first or answered_at < first[key][0]:
            first[key] = (answered_at, right)
    out: dict[str, tuple[int, int]] = {}
    for (item_id, _), (_, right) in first.items():
        n, k = out.get(item_id, (0, 0))
        out[item_id] = (n + 1, k + int(right))
    return out


# -- FSRS review settings ---------------------------------------------------------------------------------------


def get_review_settings(*, session: Session, user_id: int) -> ReviewSettings | None:
    return session.get(ReviewSettings, user_id)
