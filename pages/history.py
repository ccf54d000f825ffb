"""History page: your case studies and quiz attempts (instructors: also attempts at their quizzes; admins: all).

Search, filter, open an entry for its full detail, delete with confirmation, export CSV or JSON.
User and model text is shown as text or Markdown only, never as HTML.
"""

from datetime import UTC, datetime, time, timedelta

import streamlit as st
from sqlmodel import Session

from app import auth, resources
from core import retrieval, safety
from core.quiz_text import md_escape
from services import StorageError, accounts
from services.accounts import HistoryEntry, HistoryError

user = auth.require_role("student", "instructor", "admin")
engine = resources.get_engine()

KIND_LABELS = {"All": None, "Case studies": "case", "Quiz attempts": "quiz"}
FORCED_LABELS = {"budget": "final answer forced at the token budget",
                 "conclude": "concluded early at the student's request",
                 "eos": "the model ended without a final answer, so it was asked for one"}
for key, default in (("history_confirm_delete", None),):
    st.session_state.setdefault(key, default)

st.title("History")
if "history_flash" in st.session_state:
    ok, message = st.session_state.pop("history_flash")
    (st.success if ok else st.error)(message)
if user.role != "student":
    st.caption("Admins see everyone's history." if user.role == "admin"
               else "You see your own history and the attempts made at your quizzes.")

with Session(engine) as session:
    adapters = accounts.history_adapters(session=session, viewer=user)

kind_col, search_col, from_col, to_col, adapter_col = st.columns([1, 2, 1, 1, 1])
kind_label = kind_col.selectbox("Type", list(KIND_LABELS), key="history_kind")
search = search_col.text_input("Search case text and answers", key="history_search",
                               max_chars=accounts.SEARCH_MAX_CHARS)
date_from = from_col.date_input("From", value=None, key="history_from")
date_to = to_col.date_input("To", value=None, key="history_to")
adapter = adapter_col.selectbox("Adapter", ["Any", *adapters], key="history_adapter")

since = datetime.combine(date_from, time.min, tzinfo=UTC) if date_from else None
until = datetime.combine(date_to, time.min, tzinfo=UTC) + timedelta(days=1) if date_to else None
with Session(engine) as session:
    entries = accounts.list_history(
        session=session, viewer=user, kind=KIND_LABELS[kind_label], search=search, since=since, until=until,
        adapter=None if adapter == "Any" else adapter,
    )

if not entries:
    st.info("Nothing here yet." if not (search or date_from or date_to or kind_label != "All" or adapter != "Any")
            else "No entries match these filters.")
    st.stop()


def _label(entry: HistoryEntry) -> str:
    kind = "Case study" if entry.kind == "case" else "Quiz"
    who = "" if entry.user_id == user.id else f" · {entry.username}"
    return f"{entry.created_at:%Y-%m-%d %H:%M} · {kind}{who} · {entry.title[:60]}"


rows = [
    {
        "When (UTC)": f"{e.created_at:%Y-%m-%d %H:%M}",
        "Type": "Case study" if e.kind == "case" else "Quiz",
        "User": e.username,
        "Title": e.title,
        "Status": e.status,
        "Adapter": e.adapter,
        "Score": f"{e.score:.0%}" if e.score is not None else "",
    }
    for e in entries
]
if user.role == "student":  # only ever their own
    rows = [{k: v for k, v in row.items() if k != "User"} for row in rows]
st.dataframe(rows, hide_index=True, key="history_table")
st.caption(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, newest first (times in UTC).")


def _export(fmt: str, shown: list[HistoryEntry]):
    def build() -> str:
        with Session(engine) as session:
            return accounts.export_history(session=session, viewer=user, entries=shown, fmt=fmt)

    return build


csv_col, json_col = st.columns(2)
csv_col.download_button("Export CSV", data=_export("csv", entries), file_name="medstudy-history.csv",
                        mime="text/csv", key="history_export_csv", on_click="ignore", icon=":material/download:")
json_col.download_button("Export JSON", data=_export("json", entries), file_name="medstudy-history.json",
                         mime="application/json", key="history_export_json", on_click="ignore",
                         icon=":material/download:")

by_key = {f"{e.kind}:{e.id}": e for e in entries}
selected = st.selectbox("Open an entry", list(by_key), index=None, format_func=lambda k: _label(by_key[k]),
                        placeholder="Choose an entry to see its details", key="history_open")
if selected is None:
    st.stop()
entry = by_key[selected]

with Session(engine) as session:
    detail, items = accounts.entry_detail(session=session, viewer=user, entry=entry)
if detail is None:
    st.warning("This entry no longer exists or you may not see it.")
    st.stop()

st.subheader(_label(entry))
if entry.kind == "case":
    st.markdown("**Case**")
    st.code(detail["case_text"], language=None, wrap_lines=True)
    st.markdown("**Reasoning**")
    # Model text: HTML shown literally and no remote images, as on the case-study page.
    st.markdown(safety.markdown_text(detail["reasoning"]) if detail["reasoning"] else "_(none)_")
    st.markdown("**Final answer**")
    st.markdown(safety.markdown_text(detail["answer"]) if detail["answer"] else "_(none)_")
    timings = detail["timings"] or {}
    cols = st.columns(4)
    for col, (key, label, fmt) in zip(cols, [("ttft_s", "Time to first token", "{:.2f} s"),
                                             ("tokens", "Tokens", "{}"),
                                             ("tokens_per_s", "Tokens/s", "{:.1f}"),
                                             ("total_s", "Total time", "{:.1f} s")]):
        value = timings.get(key)
        col.metric(label, fmt.format(value) if isinstance(value, (int, float)) else "–")
    forced = FORCED_LABELS.get(timings.get("forced") or "")
    st.caption(f"Model `{detail['base_model']}` · adapter `{detail['adapter'] or 'none'}` · status {detail['status']}"
               + (f" · {forced}" if forced else "")
               + (f" · from item `{detail['source_item_id']}`" if detail["source_item_id"] else ""))
    references = detail.get("references") or []
    if references:
        given = (detail["settings"] or {}).get("use_references")
        with st.expander(f"References ({len(references)})", icon=":material/menu_book:"):
            st.caption("Given to the model with the case." if given else "Shown beside the run; not given to the model.")
            for ref in references:
                # Stored text from public sources, escaped; the URL is text, not a Markdown link (the browser's
                # autolinking may still make a plain http(s) URL clickable, and nothing else).
                with st.container(border=True):
                    st.markdown(f"**{md_escape(str(ref.get('title') or 'Untitled'))}**")
                    st.markdown(" · ".join(md_escape(str(ref[k])) for k in ("site", "url") if ref.get(k)))
                    st.caption(md_escape(" — ".join(str(ref[k]) for k in ("license", "attribution") if ref.get(k))))
                    st.markdown(retrieval.highlight(str(ref.get("text") or ""), detail["case_text"]))
    with st.expander("Generation settings and timings"):
        st.json({"settings": detail["settings"], "timings": timings})
else:
    cols = st.columns(4)
    cols[0].metric("Score", f"{detail['score']:.0%}" if detail["score"] is not None else "–")
    cols[1].metric("Status", detail["status"].replace("_", " "))
    cols[2].metric("Mode", detail["mode"])
    cols[3].metric("Questions", len(items))
    st.dataframe(
        [
            {
                "#": i["position"] + 1, "Item": i["item_id"], "Answer": i["chosen"] or i["free_text"] or "",
                "Correct": i["correct"], "Self-grade": i["self_grade"] or "", "Flagged": i["flagged"],
            }
            for i in items
        ],
        hide_index=True,
        key="history_attempt_items",
    )
    with st.expander("Quiz configuration"):
        st.json(detail["config"])

if accounts.can_delete(user, entry.user_id):
    if st.session_state["history_confirm_delete"] != selected:
        if st.button("Delete this entry", key="history_delete", icon=":material/delete:"):
            st.session_state["history_confirm_delete"] = selected
            st.rerun()
    else:
        st.warning("Delete this entry for good? This cannot be undone.")
        yes_col, no_col = st.columns(2)
        if yes_col.button("Yes, delete", key="history_delete_yes", type="primary"):
            try:
                with Session(engine) as session:
                    accounts.delete_history_entry(session=session, viewer=user, kind=entry.kind, entry_id=entry.id)
                st.session_state["history_flash"] = (True, "Entry deleted.")
            except HistoryError as exc:
                st.session_state["history_flash"] = (False, str(exc))
            except StorageError as exc:  # the entry is still there and stays open
                st.session_state["history_flash"] = (False, exc.user_message("the deletion"))
                st.session_state["history_confirm_delete"] = None
                st.rerun()
            st.session_state["history_confirm_delete"] = None
            del st.session_state["history_open"]
            st.rerun()
        if no_col.button("Cancel", key="history_delete_no"):
            st.session_state["history_confirm_delete"] = None
            st.rerun()
