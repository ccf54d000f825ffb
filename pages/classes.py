"""Classes page (instructors and admins): create a class, enrol students, assign a published quiz set
with an opening time and a due date, and follow each student's progress (CSV export).

An instructor sees only their own classes, an admin every class: ``services.classes`` checks this on
the server for every call, whatever this page shows. Times are entered and shown in the browser's
time zone and stored in UTC. Usernames and titles are shown escaped, never as HTML.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time, timedelta
from typing import Any

import streamlit as st
from sqlmodel import Session

from app import auth, resources, saving, tabs
from core import quiz_text
from core.quiz import LATE_POLICY_LABELS, PERCENTILE_MIN_PEERS, in_zone, local_to_utc
from services import classes, quiz
from services.classes import STATUS_LABELS, ClassError

user = auth.require_role(auth.INSTRUCTOR, auth.ADMIN)
engine = resources.get_engine()
zone = st.context.timezone or "UTC"

st.title("Classes")
st.session_state.setdefault("cls_flash", None)

MODE_LABELS = {"tutor": "Tutor (feedback after each answer)", "exam": "Exam (timed, feedback at the end)"}


def flash(kind: str, message: str) -> None:
    st.session_state["cls_flash"] = (kind, message)


def act(action: Callable[..., Any], success: str | Callable[[Any], str], **kwargs: Any) -> Any:
    """One change in its own session; a refusal or a failed write becomes a message (nothing half-written)."""
    ok, result = saving.attempt(engine, action, what="the change", refusals=(ClassError,),
                                on_error=lambda message: flash("error", message), viewer=user, **kwargs)
    if ok:
        flash("success", success(result) if callable(success) else success)
    return result


def read(query: Callable[..., Any], **kwargs: Any) -> Any:
    with Session(engine) as session:
        return query(session=session, viewer=user, **kwargs)


def local(moment: datetime | None) -> str:
    return "" if moment is None else f"{in_zone(moment, zone):%Y-%m-%d %H:%M}"


# -- callbacks ---------------------------------------------------------------------------------------------------


def create_class() -> None:
    made = act(classes.create_class, lambda c: f"Class created. Its join code is {c.join_code}.",
               name=st.session_state.get("cls_new_name", ""))
    if made is not None:
        st.session_state["cls_current"] = made.id
        st.session_state["cls_new_name"] = ""


def enrol(class_id: int, names: dict[int, str]) -> None:
    picked = list(st.session_state.get("cls_enrol_pick") or [])
    done = act(classes.enrol, lambda enrolled: f"Enrolled {', '.join(enrolled)}.", class_id=class_id,
               user_ids=picked)
    if done is not None:
        st.session_state["cls_enrol_pick"] = []


def assign(class_id: int) -> None:
    s = st.session_state
    opens = local_to_utc(datetime.combine(s["cls_opens_date"], s["cls_opens_time"]), zone)
    due = local_to_utc(datetime.combine(s["cls_due_date"], s["cls_due_time"]), zone)
    mode = s["cls_mode"]
    minutes, tries = int(s["cls_minutes"] or 0), int(s["cls_attempts"] or 0)
    if s.get("cls_quiz_set") is None:
        flash("error", "Choose a published quiz set to assign.")
        return
    act(classes.assign, "Assigned. Students see it at the top of their Quiz page.", class_id=class_id,
        quiz_set_id=s["cls_quiz_set"], title=s.get("cls_title", ""), opens_at=opens, due_at=due, mode=mode,
        time_limit_s=minutes * 60 if mode == "exam" and minutes else None, attempts_allowed=tries or None,
        late_policy=s["cls_late"])


# -- sections ----------------------------------------------------------------------------------------------------


def members_section(class_id: int) -> None:
    members = read(classes.members, class_id=class_id)
    st.markdown(f"**Students ({len(members)})**")
    if members:
        st.caption(", ".join(quiz_text.md_escape(m.username) + ("" if m.active else " (deactivated)") for m in members))
    candidates = {u.id: u.username for u in read(classes.enrolment_candidates, class_id=class_id)}
    with st.form("cls_enrol_form"):
        st.multiselect("Enrol students", list(candidates), key="cls_enrol_pick", format_func=candidates.get,
                       placeholder="Choose students")
        st.form_submit_button("Enrol", on_click=enrol, args=(class_id, candidates))


def assign_section(class_id: int) -> None:
    sets = {qs.id: qs for qs in read(classes.assignable_quiz_sets)}
    today = in_zone(quiz.current_time(), zone)
    with st.form("cls_assign_form"):
        st.markdown("**Assign a quiz set**")
        st.selectbox("Quiz set", list(sets), index=None, key="cls_quiz_set", placeholder="Choose a published quiz set",
                     format_func=lambda i: sets[i].title)
        st.text_input("Title (empty: the quiz set's title)", key="cls_title", max_chars=200)
        left, right = st.columns(2)
        left.date_input("Opens on", value=today.date(), key="cls_opens_date")
        left.time_input("Opens at", value=time(today.hour, today.minute), key="cls_opens_time", step=60)
        right.date_input("Due on", value=today.date() + timedelta(days=1), key="cls_due_date")
        right.time_input("Due at", value=time(23, 59), key="cls_due_time", step=60)
        st.caption(f"Times are in your time zone, {quiz_text.md_escape(zone)}.")
        st.radio("Mode", list(MODE_LABELS), format_func=MODE_LABELS.get, key="cls_mode", horizontal=True)
        left, right = st.columns(2)
        left.number_input("Time limit in minutes (exam; 0 = untimed)", min_value=0, max_value=600, value=0,
                          key="cls_minutes")
        right.number_input("Attempts allowed (0 = unlimited)", min_value=0, max_value=50, value=1, key="cls_attempts")
        st.radio("After the due date", list(LATE_POLICY_LABELS), format_func=LATE_POLICY_LABELS.get, key="cls_late",
                 horizontal=True)
        st.form_submit_button("Assign", type="primary", on_click=assign, args=(class_id,))


def progress_section(class_id: int) -> None:
    assignments = {a.id: a for a in read(classes.class_assignments, class_id=class_id)}
    if not assignments:
        st.info("No assignments yet.")
        return
    chosen = st.selectbox("Assignment", list(assignments), key="cls_assignment",
                          format_func=lambda i: f"{assignments[i].title} · due {local(assignments[i].due_at)}")
    if chosen is None:
        return
    with Session(engine) as session:
        catalog = quiz.load_catalog(session=session, bank=resources.get_bank())
        report = classes.progress(session=session, catalog=catalog, viewer=user, assignment_id=chosen)
    a = report.assignment
    st.caption(f"Opens {local(a.opens_at)} · due {local(a.due_at)} ({quiz_text.md_escape(zone)}) · {a.mode} mode · "
               f"late work {'accepted, marked late' if a.late_policy == 'accept' else 'refused'}")
    counts = report.counts
    cols = st.columns(4)
    for col, status in zip(cols, ("submitted", "late", "in_progress", "not_started")):
        col.metric(STATUS_LABELS[status].capitalize(), counts[status])
    # A plain table (not the canvas grid): small, and its text is in the page for screen readers and tests.
    st.table(
        [{"Student": r.username, "Status": STATUS_LABELS[r.status],
          "Score": "" if r.score_percent is None else f"{r.score_percent:.0f}%",
          "Time taken": "" if r.time_taken_s is None else quiz_text.format_duration(r.time_taken_s),
          f"Submitted ({zone})": local(r.submitted_at), "Attempts": r.attempts,
          "Percentile": "" if r.percentile is None else f"{100 * r.percentile:.0f}"} for r in report.rows],
        hide_index=True,
    )
    st.caption(f"Percentiles appear once {PERCENTILE_MIN_PEERS} students have submitted.")
    if report.weakest:
        st.markdown("**Weakest subjects of the class**")
        st.caption(" · ".join(f"{quiz_text.md_escape(quiz_text.subject_label(s))} {g.percent:.0f}%"
                              for s, g in report.weakest))
    st.download_button("Download progress (CSV)", classes.progress_csv(report), file_name=f"assignment-{a.id}.csv",
                       mime="text/csv", key="cls_progress_csv", icon=":material/download:")


# -- the page ----------------------------------------------------------------------------------------------------

if st.session_state["cls_flash"]:
    kind, message = st.session_state["cls_flash"]
    st.session_state["cls_flash"] = None
    getattr(st, kind)(quiz_text.md_escape(message))

with st.form("cls_create_form"):
    st.text_input("New class name", key="cls_new_name", max_chars=200)
    st.form_submit_button("Create class", on_click=create_class)

mine = {c.id: c for c in read(classes.manageable_classes)}
if not mine:
    st.info("You have no classes yet. Create one above.")
    st.stop()
if st.session_state.get("cls_current") not in mine:
    st.session_state["cls_current"] = next(iter(mine))
class_id = st.selectbox("Class", list(mine), key="cls_current", format_func=lambda i: mine[i].name)
st.markdown(f"Join code: `{mine[class_id].join_code}` (students enter it on their Quiz page)")
tabs.show_tabs({
    "Students": lambda: members_section(class_id),
    "Assign": lambda: assign_section(class_id),
    "Progress": lambda: progress_section(class_id),
}, key="cls_tab")
