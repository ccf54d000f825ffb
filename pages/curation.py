"""Curation page (instructors and admins): browse the bank, edit and retire items, build and publish quiz sets,
import items from CSV or JSON, export, and see how each quiz went.

Logic lives in ``services.curation`` (items, quiz sets, analytics and exports), ``core.quiz_bank``
(search) and ``core.quiz_import`` (import validation); this page reads widgets, makes one call there
per action and renders. Stored text (imports, edits) is shown with ``st.text`` or
escaped Markdown, never as HTML.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import streamlit as st
from sqlmodel import Session

from app import auth, resources, saving, tabs
from core import charts, quiz_text
from core.quiz import DIFFICULTY_MIN_ANSWERS, difficulty_label
from core.quiz_bank import OCR_FILTERS, browse
from core.quiz_catalog import Catalog
from core.quiz_import import parse_import
from core.records import Record
from services import curation
from services.curation import OverrideError, QuizError

user = auth.require_role(auth.INSTRUCTOR, auth.ADMIN)
engine = resources.get_engine()

st.title("Curation")
bank = resources.bank_or_stop()

for key, default in (("cur_flash", None), ("cur_import_nonce", 0)):
    st.session_state.setdefault(key, default)

SHOWN_ROWS = 200
OCR_LABELS = {"any": "Any", "only": "Only OCR-flagged", "exclude": "Hide OCR-flagged"}
NEW_SET = 0
"""Quiz-set selector value for "create a new quiz set"."""


def load_catalog() -> Catalog:
    with Session(engine) as session:
        return curation.load_catalog(session=session, bank=bank)


def flash(kind: str, message: str) -> None:
    st.session_state["cur_flash"] = (kind, message)


def act(action: Callable[..., Any], success: str | Callable[[Any], str], **kwargs: Any) -> Any:
    """Run one change in its own session; a refusal or a failed write (disk, lock) becomes a message.

    Returns None when nothing was saved; the form keeps what was typed.
    """
    ok, out = saving.attempt(engine, action, what="the change", refusals=(OverrideError, QuizError),
                             on_error=lambda message: flash("error", message), describe=_refusal, **kwargs)
    if ok:
        flash("success", success(out) if callable(success) else success)
    return out


def _refusal(exc: Exception) -> str:
    return "Not saved: " + "; ".join(exc.problems) + "." if isinstance(exc, OverrideError) else str(exc)


# -- quiz-set settings ------------------------------------------------------------------------------------------


def set_values(prefix: str) -> dict[str, Any]:
    """The quiz-set settings form's values, converted to storage units (seconds, fraction, None = unlimited)."""
    state = st.session_state
    minutes = state[f"{prefix}_minutes"]
    passing = state[f"{prefix}_passing"]
    allowed = state[f"{prefix}_allowed"]
    return dict(
        title=state[f"{prefix}_title"], description=state[f"{prefix}_description"], mode=state[f"{prefix}_mode"],
        time_limit_s=int(minutes * 60) if minutes else None, passing_score=passing / 100 if passing else None,
        attempts_allowed=int(allowed) if allowed else None,
    )


def settings_fields(prefix: str, quiz_set: Any | None) -> None:
    st.text_input("Title", key=f"{prefix}_title", value=quiz_set.title if quiz_set else "", max_chars=200)
    st.text_area("Description", key=f"{prefix}_description", value=quiz_set.description if quiz_set else "")
    modes = ["tutor", "exam"]
    st.radio("Mode", modes, key=f"{prefix}_mode", horizontal=True,
             index=modes.index(quiz_set.mode) if quiz_set else 0,
             format_func={"tutor": "Tutor (feedback after each answer)", "exam": "Exam (timed)"}.get)
    cols = st.columns(3)
    cols[0].number_input("Time limit, minutes (exam; 0 = untimed)", min_value=0, max_value=600, step=1,
                         key=f"{prefix}_minutes",
                         value=(quiz_set.time_limit_s or 0) // 60 if quiz_set else 0)
    cols[1].number_input("Passing score, % (0 = none)", min_value=0, max_value=100, step=5, key=f"{prefix}_passing",
                         value=round(100 * quiz_set.passing_score) if quiz_set and quiz_set.passing_score else 0)
    cols[2].number_input("Attempts allowed (0 = unlimited)", min_value=0, max_value=100, step=1,
                         key=f"{prefix}_allowed",
                         value=(quiz_set.attempts_allowed or 0) if quiz_set else 0)


def create_set() -> None:
    created = act(curation.create_quiz_set, "Quiz set created. Add questions, then publish it.", owner_id=user.id,
                  **set_values("cur_new"))
    if created is not None:
        st.session_state["cur_set"] = created.id


def save_settings(quiz_set_id: int) -> None:
    if act(curation.update_quiz_set, "Settings saved.", viewer=user, quiz_set_id=quiz_set_id,
           **set_values(f"cur_edit_{quiz_set_id}")) is not None:
        st.session_state["cur_set"] = quiz_set_id  # sends the (possibly renamed) label to the browser


def publish(quiz_set_id: int, published: bool) -> None:
    act(curation.set_published,
        "Published: students can take it now." if published else "Unpublished: students no longer see it.",
        viewer=user, quiz_set_id=quiz_set_id, published=published)


def add_items(quiz_set_id: int, item_ids: list[str]) -> curation.AddResult | None:
    def summary(result: curation.AddResult) -> str:
        parts = [f"Added {len(result.added)} question{'s' if len(result.added) != 1 else ''}."]
        if result.already:
            parts.append(f"Already in the set: {', '.join(result.already)}.")
        if result.unknown:
            parts.append(f"Not in the bank: {', '.join(result.unknown)}.")
        if result.retired:
            parts.append(f"Retired, not added: {', '.join(result.retired)}.")
        return " ".join(parts)

    result = act(curation.add_to_quiz_set, summary, catalog=load_catalog(), viewer=user, quiz_set_id=quiz_set_id,
                 item_ids=item_ids)
    if result is not None and not result.added:
        flash("warning", summary(result))
    return result


def add_typed_ids(quiz_set_id: int) -> None:
    text = st.session_state.get("cur_add_ids", "")
    ids = [part for part in text.replace(",", "\n").split() if part]
    if not ids:
        flash("warning", "Type or paste item ids, one per line.")
        return
    if add_items(quiz_set_id, ids) is not None:
        st.session_state["cur_add_ids"] = ""  # kept when nothing was saved


def add_random(quiz_set_id: int, pool: list[str]) -> None:
    n = int(st.session_state.get("cur_add_random_n", 5))
    with Session(engine) as session:
        current = set(curation.quiz_set_item_ids(session=session, quiz_set_id=quiz_set_id))
    candidates = [i for i in pool if i not in current]
    if not candidates:
        flash("warning", "No item matching the bank search is left to add.")
        return
    add_items(quiz_set_id, random.sample(candidates, min(n, len(candidates))))


def move(quiz_set_id: int, item_id: str, offset: int) -> None:
    act(curation.move_in_quiz_set, "Order saved.", viewer=user, quiz_set_id=quiz_set_id, item_id=item_id,
        offset=offset)


def remove(quiz_set_id: int, item_id: str) -> None:
    act(curation.remove_from_quiz_set, f"Removed {item_id}.", viewer=user, quiz_set_id=quiz_set_id,
        item_id=item_id)


# -- item edits --------------------------------------------------------------------------------------------------


def save_edit(item_id: str) -> None:
    state = st.session_state
    original = load_catalog().original(item_id)
    options = None
    if original is not None and original.options:
        options = {key: state[f"cur_edit_opt_{item_id}_{key}"] for key in original.options}
    act(curation.save_edit, "Edit saved. Students see the new text; the original is kept.", catalog=load_catalog(),
        item_id=item_id, editor_id=user.id, question=state[f"cur_edit_q_{item_id}"], options=options,
        explanation=state[f"cur_edit_expl_{item_id}"])


def revert_edit(item_id: str) -> None:
    catalog = load_catalog()
    original = catalog.original(item_id)
    if original is None:
        return
    act(curation.save_edit, "Back to the original text.", catalog=catalog, item_id=item_id, editor_id=user.id,
        question=original.question, options=original.options, explanation=original.explanation)
    prefixes = (f"cur_edit_q_{item_id}", f"cur_edit_expl_{item_id}", f"cur_edit_opt_{item_id}_")
    for key in [k for k in st.session_state if str(k).startswith(prefixes)]:
        del st.session_state[key]


def retire(item_id: str, retired: bool) -> None:
    act(curation.set_retired, "Retired: no new quiz will use it." if retired else "Restored.",
        catalog=load_catalog(), item_id=item_id, editor_id=user.id, retired=retired)


# -- rendering ---------------------------------------------------------------------------------------------------


def show_record(record: Record) -> None:
    """An item as students see it, with the answer key."""
    st.caption(quiz_text.md_escape(f"{record.id} · {quiz_text.kind_label(record.kind)} · "
                                   f"{quiz_text.subject_label(record.subject)}"))
    st.caption(quiz_text.md_escape(quiz_text.credit_line(record)))
    for notice in quiz_text.notices(record):
        st.caption(":material/warning: " + quiz_text.md_escape(notice))
    if record.context:
        with st.expander("Abstract"):
            st.text(record.context)
    st.text(record.question)
    for key, text in (record.options or {}).items():
        mark = " ✓" if key == record.correct else ""
        st.markdown(quiz_text.option_label(key, text) + mark)
    if record.kind == "open":
        st.markdown("**Reference answer**")
        st.text(record.answer)
    if record.explanation:
        st.markdown("**Explanation**")
        st.text(record.explanation)


def difficulty_text(share: float | None) -> str:
    """``hard (20% right)``; empty below the minimum number of answers."""
    return "" if share is None else f"{difficulty_label(share)} ({100 * share:.0f}% right)"


def status_of(catalog: Catalog, item_id: str) -> str:
    marks = []
    if catalog.is_imported(item_id):
        marks.append("imported")
    if catalog.is_edited(item_id):
        marks.append("edited")
    if catalog.is_retired(item_id):
        marks.append("retired")
    return ", ".join(marks)


def item_panel(catalog: Catalog, item_id: str, current_set: Any | None) -> None:
    record = catalog.item(item_id)
    original = catalog.original(item_id)
    if record is None or original is None:
        st.warning("This item is no longer in the bank.")
        return
    with st.container(border=True):
        if catalog.is_retired(item_id):
            st.warning("Retired: no new quiz uses this item; attempts already made keep it.")
        show_record(record)
        with Session(engine) as session:
            share = curation.item_difficulty(session=session, item_ids=[item_id]).get(item_id)
        st.caption(f"Peer difficulty: {difficulty_text(share)}" if share is not None else
                   f"Peer difficulty: not yet known (fewer than {DIFFICULTY_MIN_ANSWERS} users have answered).")
    if catalog.is_edited(item_id):
        with st.expander("Original text (before edits)"):
            show_record(original)
    cols = st.columns(3)
    if current_set is not None:
        cols[0].button(f"Add to {quiz_text.md_escape(current_set.title)}", key="cur_item_add", type="primary",
                       on_click=add_items, args=(current_set.id, [item_id]),
                       disabled=catalog.is_retired(item_id))
    else:
        cols[0].caption("Choose or create a quiz set in the Quiz sets tab to add items to it.")
    if catalog.is_retired(item_id):
        cols[1].button("Restore", key="cur_item_restore", on_click=retire, args=(item_id, False))
    else:
        cols[1].button("Retire", key="cur_item_retire", on_click=retire, args=(item_id, True))
    if catalog.is_edited(item_id):
        cols[2].button("Revert to original", key="cur_item_revert", on_click=revert_edit, args=(item_id,))
    with st.expander("Edit this item"):
        with st.form(f"cur_edit_form_{item_id}"):
            st.text_area("Question", value=record.question, key=f"cur_edit_q_{item_id}", height=150)
            for key, text in (record.options or {}).items():
                st.text_input(f"Option {key}", value=text, key=f"cur_edit_opt_{item_id}_{key}")
            st.text_area("Explanation", value=record.explanation, key=f"cur_edit_expl_{item_id}")
            st.form_submit_button("Save edit", type="primary", key=f"cur_edit_save_{item_id}", on_click=save_edit,
                                  args=(item_id,))
        st.caption("The answer key stays the original's. The original text is always kept.")


FILTER_KEYS = ("cur_query", "cur_ocr", "cur_show_retired", "cur_sources", "cur_subjects", "cur_steps", "cur_kinds")


def keep_filters() -> None:
    """Keep the bank filters while another tab is open (Streamlit forgets widgets that were not drawn)."""
    for key in FILTER_KEYS:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def current_matches(catalog: Catalog) -> list[Record]:
    """The items the bank filters select (also used to add random items to a quiz set)."""
    state = st.session_state
    everything = catalog.items(include_retired=bool(state.get("cur_show_retired")))
    return browse(everything, query=state.get("cur_query", ""), sources=state.get("cur_sources") or None,
                  subjects=state.get("cur_subjects") or None, steps=state.get("cur_steps") or None,
                  kinds=state.get("cur_kinds") or None, ocr=state.get("cur_ocr") or "any", haystack=catalog.haystack)


def filter_widgets(catalog: Catalog) -> None:
    everything = catalog.originals()
    facets: dict[str, set[str]] = {"sources": set(), "subjects": set(), "kinds": set()}
    for record in everything:
        facets["sources"].add(record.source)
        facets["subjects"].add(record.subject)
        facets["kinds"].add(record.kind)
    query_col, ocr_col, retired_col = st.columns([3, 1, 1])
    query_col.text_input("Search", key="cur_query",
                         placeholder='Words or "a phrase" in the question, options, answer, explanation or id')
    ocr_col.selectbox("OCR flag", OCR_FILTERS, key="cur_ocr", format_func=OCR_LABELS.get)
    retired_col.checkbox("Show retired items", key="cur_show_retired")
    source_col, subject_col, step_col, kind_col = st.columns(4)
    source_col.multiselect("Source", sorted(facets["sources"]), key="cur_sources", placeholder="All")
    subject_col.multiselect("Subject", sorted(facets["subjects"]), key="cur_subjects", placeholder="All",
                            format_func=quiz_text.subject_label)
    step_col.multiselect("USMLE Step", list(quiz_text.STEP_LABELS), key="cur_steps", placeholder="Any",
                         format_func=quiz_text.step_label)
    kind_col.multiselect("Type", sorted(facets["kinds"]), key="cur_kinds", placeholder="All",
                         format_func=quiz_text.kind_label)


def bank_tab(catalog: Catalog, current_set: Any | None) -> None:
    filter_widgets(catalog)
    matches = current_matches(catalog)
    st.caption(f"{len(matches)} item{'s' if len(matches) != 1 else ''} match"
               + (f" (the first {SHOWN_ROWS} are listed)" if len(matches) > SHOWN_ROWS else ""))
    shown = matches[:SHOWN_ROWS]
    with Session(engine) as session:
        shares = curation.item_difficulty(session=session, item_ids=[r.id for r in shown])
    st.caption(f"Difficulty is the share of correct first answers across all users, shown once "
               f"{DIFFICULTY_MIN_ANSWERS} users have answered an item.")
    st.dataframe(
        [{"Id": r.id, "Source": r.source, "Subject": r.subject, "Type": quiz_text.kind_label(r.kind),
          "Step": ", ".join(quiz_text.step_label(t) for t in r.tags if t in quiz_text.STEP_LABELS),
          "Difficulty": difficulty_text(shares.get(r.id)),
          "Flags": ", ".join(r.flags), "Status": status_of(catalog, r.id),
          "Question": quiz_text.preview(r.question, 120)} for r in shown],
        hide_index=True, key="cur_bank_table",
    )
    # Labels from the original text: an edit must not change the label the browser hands back.
    originals = {r.id: catalog.original(r.id) or r for r in shown}
    item_id = st.selectbox("Preview an item", list(originals), index=None, key="cur_item",
                           placeholder="Choose an item",
                           format_func=lambda i: f"{i} · {quiz_text.preview(originals[i].question, 70)}")
    if item_id is not None:
        item_panel(catalog, item_id, current_set)


def sets_tab(catalog: Catalog, sets: dict[int, Any], matches: list[Record]) -> None:
    quiz_set_id = st.session_state.get("cur_set")
    if not quiz_set_id:
        st.markdown("#### New quiz set")
        with st.form("cur_new_form"):
            settings_fields("cur_new", None)
            st.form_submit_button("Create quiz set", type="primary", key="cur_new_create", on_click=create_set)
        return
    quiz_set = sets[quiz_set_id]
    with Session(engine) as session:
        item_ids = curation.quiz_set_item_ids(session=session, quiz_set_id=quiz_set_id)
    status = "published" if quiz_set.published else "draft (students do not see it)"
    st.markdown(f"#### {quiz_text.md_escape(quiz_set.title)}")
    st.caption(f"{len(item_ids)} question{'s' if len(item_ids) != 1 else ''} · {status}")
    pub_col, export_col = st.columns(2)
    if quiz_set.published:
        pub_col.button("Unpublish", key="cur_unpublish", on_click=publish, args=(quiz_set_id, False))
    else:
        pub_col.button("Publish", key="cur_publish", type="primary", on_click=publish, args=(quiz_set_id, True))

    def export() -> str:
        with Session(engine) as session:
            return curation.quiz_set_csv(session=session, catalog=load_catalog(), quiz_set_id=quiz_set_id)

    export_col.download_button("Export questions (CSV)", data=export, file_name=f"quiz-set-{quiz_set_id}.csv",
                               mime="text/csv", key="cur_export_set", on_click="ignore", icon=":material/download:")
    with st.expander("Settings", expanded=not item_ids):
        with st.form(f"cur_settings_form_{quiz_set_id}"):
            settings_fields(f"cur_edit_{quiz_set_id}", quiz_set)
            st.form_submit_button("Save settings", key=f"cur_settings_save_{quiz_set_id}", on_click=save_settings,
                                  args=(quiz_set_id,))

    st.markdown("**Questions**")
    if not item_ids:
        st.info("No questions yet: add some below or from the Bank tab.")
    for n, item_id in enumerate(item_ids):
        record = catalog.item(item_id)
        text_col, up_col, down_col, remove_col = st.columns([8, 1, 1, 1])
        label = quiz_text.preview(record.question, 100) if record else "(no longer in the bank)"
        note = " · retired" if catalog.is_retired(item_id) else ""
        text_col.markdown(quiz_text.md_escape(f"{n + 1}. {label}"))
        text_col.caption(quiz_text.md_escape(f"{item_id}{note}"))
        up_col.button("↑", key=f"cur_up_{n}", disabled=n == 0, on_click=move, args=(quiz_set_id, item_id, -1),
                      help="Move up")
        down_col.button("↓", key=f"cur_down_{n}", disabled=n == len(item_ids) - 1, on_click=move,
                        args=(quiz_set_id, item_id, 1), help="Move down")
        remove_col.button("✕", key=f"cur_remove_{n}", on_click=remove, args=(quiz_set_id, item_id), help="Remove")
    st.markdown("**Add questions**")
    st.text_area("Item ids, one per line", key="cur_add_ids", placeholder="medqa:0042ca610f7564b5")
    st.button("Add these items", key="cur_add_ids_button", on_click=add_typed_ids, args=(quiz_set_id,))
    random_col, button_col = st.columns([1, 2])
    random_col.number_input("How many", min_value=1, max_value=100, value=5, key="cur_add_random_n")
    button_col.button("Add random items matching the bank search", key="cur_add_random", on_click=add_random,
                      args=(quiz_set_id, [r.id for r in matches if not catalog.is_retired(r.id)]))


def import_tab(catalog: Catalog, current_set: Any | None) -> None:
    st.caption("CSV or JSON, UTF-8. Columns: question, A–E (or options), correct, answer (open-ended), explanation, "
               "subject, source, license (required), attribution (needed for CC BY material), kind, tags.")
    nonce = st.session_state["cur_import_nonce"]  # a new key after each import empties the uploader
    upload = st.file_uploader("Items file", type=["csv", "json"], key=f"cur_import_{nonce}")
    if upload is None:
        return
    result = parse_import(upload.getvalue(), upload.name, existing_ids=catalog.all_ids())
    bad_rows = len(result.error_rows)
    st.markdown(f"**{len(result.valid)}** valid item{'s' if len(result.valid) != 1 else ''} · "
                f"**{len(result.errors)}** problem{'s' if len(result.errors) != 1 else ''}"
                + (f" in {bad_rows} row{'s' if bad_rows != 1 else ''}" if bad_rows else ""))
    if result.errors:
        st.error("The file has problems. Nothing is imported unless you choose to import only the valid rows.")
        st.dataframe([{"Row": e.row or "file", "Field": e.field, "Problem": e.message} for e in result.errors],
                     hide_index=True, key="cur_import_errors")
    if result.valid:
        with st.expander(f"Valid items ({len(result.valid)})"):
            st.dataframe([{"Id": r.id, "Type": quiz_text.kind_label(r.kind), "Subject": r.subject,
                           "Question": quiz_text.preview(r.question, 100)} for r in result.valid],
                         hide_index=True, key="cur_import_valid")
    if not result.valid:
        return
    valid_only = True
    if result.errors:
        valid_only = st.checkbox(f"Import only the {len(result.valid)} valid rows",
                                 key=f"cur_import_valid_only_{st.session_state['cur_import_nonce']}")
    add_to_set = False
    if current_set is not None:
        add_to_set = st.checkbox(f"Also add them to {quiz_text.md_escape(current_set.title)}", key="cur_import_add")
    label = f"Import {len(result.valid)} item{'s' if len(result.valid) != 1 else ''}"
    if st.button(label, key="cur_import_button", type="primary", disabled=not valid_only):
        count = act(curation.import_items, lambda n: f"Imported {n} item{'s' if n != 1 else ''}.",
                    importer_id=user.id, records=result.valid)
        if count and add_to_set and current_set is not None:
            add_items(current_set.id, [r.id for r in result.valid])
            kind, message = st.session_state["cur_flash"]
            flash(kind, f"Imported {count} items. {message}")
        if count is not None:  # on a failed save the file stays in the uploader
            st.session_state["cur_import_nonce"] += 1
        st.rerun()


def analytics_tab(catalog: Catalog, current_set: Any | None) -> None:
    if current_set is None:
        st.info("Choose a quiz set above to see how your students did.")
        return
    quiz_set_id = current_set.id
    with Session(engine) as session:
        report = curation.quiz_set_report(session=session, catalog=catalog, quiz_set=current_set)
    stats = report.analytics
    cols = st.columns(4)
    cols[0].metric("Attempts", stats.attempts)
    cols[1].metric("Mean score", "–" if stats.mean_percent is None else f"{stats.mean_percent:.0f}%")
    cols[2].metric("Pass rate", "–" if stats.pass_rate is None else f"{100 * stats.pass_rate:.0f}%",
                   help=None if report.passing_percent is not None else "This quiz set has no passing score.")
    cols[3].metric("In progress", report.in_progress)
    if not stats.attempts:
        st.info("No finished attempts yet.")
        return
    st.plotly_chart(charts.item_percent_correct_figure(stats.items, labels=report.labels), key="cur_item_chart")
    st.dataframe(
        [{"Question": report.labels.get(s.item_id, s.item_id), "Id": s.item_id, "Attempts": s.attempts,
          "% correct": None if s.percent_correct is None else round(s.percent_correct, 1),
          "Discrimination": None if s.discrimination is None else round(s.discrimination, 2)} for s in stats.items],
        hide_index=True, key="cur_item_stats",
    )
    if stats.group_size is None:
        st.caption("The discrimination index needs at least 5 finished attempts (upper and lower 27%).")
    st.dataframe(
        [{"User": a.username, "Finished (UTC)": f"{a.finished_at:%Y-%m-%d %H:%M}" if a.finished_at else "",
          "Status": a.status.replace("_", " "), "Score": f"{a.result.percent:.0f}%",
          "Time": quiz_text.format_duration(a.result.time_taken_s),
          "Result": "" if a.result.passed is None else ("passed" if a.result.passed else "not passed")}
         for a in reversed(report.attempts)],
        hide_index=True, key="cur_attempts_table",
    )
    st.download_button("Export results (CSV)", data=lambda: curation.results_csv(report),
                       file_name=f"quiz-set-{quiz_set_id}-results.csv", mime="text/csv", key="cur_export_results",
                       on_click="ignore", icon=":material/download:")


# -- the page ----------------------------------------------------------------------------------------------------

catalog = load_catalog()
with Session(engine) as session:
    sets = {qs.id: qs for qs in curation.editable_quiz_sets(session=session, viewer=user)}
if st.session_state.get("cur_set") not in (NEW_SET, *sets):
    st.session_state["cur_set"] = next(iter(sets), NEW_SET)  # the newest set, or a new one
keep_filters()

if st.session_state["cur_flash"]:
    kind, message = st.session_state["cur_flash"]
    st.session_state["cur_flash"] = None
    getattr(st, kind)(quiz_text.md_escape(message))

set_col, _ = st.columns([2, 1])
set_col.selectbox("Quiz set you are working on", [NEW_SET, *sets], key="cur_set",
                  format_func=lambda i: "+ New quiz set" if i == NEW_SET else f"{sets[i].title} (#{i})")
current_set = sets.get(st.session_state["cur_set"])

# Stateful tabs: the open tab survives reruns, and only its content runs.
tabs.show_tabs({
    "Bank": lambda: bank_tab(catalog, current_set),
    "Quiz sets": lambda: sets_tab(catalog, sets, current_matches(catalog)),
    "Import": lambda: import_tab(catalog, current_set),
    "Analytics": lambda: analytics_tab(catalog, current_set),
}, key="cur_tab")
