"""Source readers on fixtures excerpted from the real raw files (tests/fixtures/data, see its README)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from core.datasets import aistairc, casimedicos, huatuo_demo, medical_o1, medmcqa, medqa, mmlu, pubmedqa
from core.datasets.base import DataError, iter_json_items
from core.records import normalise

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "data"


def raw_lines(rel: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / rel).read_text(encoding="utf-8").splitlines() if line.strip()]


# -- medical-o1 subset ---------------------------------------------------------------------------------


def test_medical_o1_subset_maps_lowercase_fields():
    records = medical_o1.read_subset(FIXTURES / medical_o1.SUBSET_FOLDER)
    raw = raw_lines(f"{medical_o1.SUBSET_FOLDER}/train_data.jsonl") + raw_lines(f"{medical_o1.SUBSET_FOLDER}/test_data.jsonl")
    assert len(records) == len(raw) == 4
    for rec, row in zip(records, raw):
        assert rec.question == row["question"].strip()
        assert rec.reasoning == row["complex_cot"].strip()
        assert rec.answer == row["response"].strip()
        assert (rec.source, rec.kind, rec.license) == ("medical-o1", "open", "Apache-2.0")
        assert "FreedomIntelligence" in rec.attribution
        assert rec.id.startswith("medical-o1:")
    assert records[-1].origin == f"{medical_o1.SUBSET_FOLDER}/test_data.jsonl:1"
    assert len({r.id for r in records}) == 4


# -- HuatuoGPT-o1 demo ---------------------------------------------------------------------------------


def test_demo_keeps_the_triple_and_its_source_mcq():
    records = huatuo_demo.read(FIXTURES / huatuo_demo.FILE)
    raw = json.loads((FIXTURES / huatuo_demo.FILE).read_text(encoding="utf-8"))
    assert len(records) == len(raw) == 3
    for rec, row in zip(records, raw):
        assert rec.kind == "open" and rec.options is None
        assert rec.question == row["Question"].strip()
        assert rec.reasoning == row["Complex_CoT"].strip()
        assert rec.answer == row["Response"].strip()
        assert rec.source_mcq == {"question": row["question"].strip(), "options": row["options"], "correct": row["answer_idx"]}
        assert rec.license == "Apache-2.0"
    # origin points at the line where each record starts in the JSON array
    lines = (FIXTURES / huatuo_demo.FILE).read_text(encoding="utf-8").splitlines()
    start = int(records[1].origin.split(":")[1].split()[0])
    assert lines[start - 1].strip() == "{"
    assert raw[1]["question"][:40] in lines[start]


# -- CasiMedicos ---------------------------------------------------------------------------------------


def test_casimedicos_rebuilds_cases_from_tokens():
    records = casimedicos.read(FIXTURES / casimedicos.FOLDER, "train")
    assert len(records) == 4
    first = records[0]
    # The case text is the tokens joined by spaces; headers are not part of it.
    tokens = [line.rsplit(" ", 1)[0] for line in (FIXTURES / casimedicos.FOLDER / "train.tsv").read_text(encoding="utf-8").splitlines() if line.strip()]
    assert first.question.split()[0] == tokens[tokens.index("CASE:") + 1]
    assert "QUESTION TYPE" not in first.question and "CLINICAL CASE" not in first.question
    assert first.kind == "mcq" and first.license == "CC BY 4.0" and "CC BY 4.0" in first.attribution
    for rec in records:
        assert list(rec.options) == list("ABCDE")[: len(rec.options)]
        assert rec.correct in rec.options
        assert rec.answer == f"{rec.correct}. {rec.options[rec.correct]}"
        number = "ABCDE".index(rec.correct) + 1
        assert f"correct option {number}" in rec.origin  # the original number is kept
        assert rec.tags == ["casimedicos-train"]
        assert rec.explanation and rec.reasoning


def test_casimedicos_four_option_exams_drop_the_nan_placeholder():
    cases = casimedicos.parse_cases(FIXTURES / casimedicos.FOLDER / "train.tsv", "train")
    records = casimedicos.read(FIXTURES / casimedicos.FOLDER, "train")
    assert any(len(c.options) == 4 for c in cases) and any(len(c.options) == 5 for c in cases)
    for case, rec in zip(cases, records):
        assert len(rec.options) == len(case.options)
        assert all(text.lower() != "nan" for text in rec.options.values())


def test_casimedicos_explanation_becomes_reasoning_then_answer():
    records = casimedicos.read(FIXTURES / casimedicos.FOLDER, "train")
    lead = next(r for r in records if r.explanation.startswith("I think the correct answer is 4,"))
    assert lead.correct == "D"
    assert not lead.reasoning.lower().startswith("i think")
    assert "correct answer is 4" not in lead.reasoning
    assert lead.reasoning[0].isupper()
    # nothing but the leading clause was removed
    assert lead.explanation.endswith(lead.reasoning[1:])
    assert lead.answer == f"D. {lead.options['D']}"


@pytest.mark.parametrize(
    ("explanation", "reasoning", "stated"),
    [
        ("The correct answer is 5. An asymptomatic myoma is not a problem.", "An asymptomatic myoma is not a problem.", 5),
        ("I think the correct answer is 3 answers 2,4 and 5 are false.", "Answers 2,4 and 5 are false.", 3),
        ("The correct answer is the first one. It is typical.", "It is typical.", 1),
        ("The correct answer is: 3. IgA nephropathy. Given that it is vague.", "Given that it is vague.", 3),
        ("The correct answer is 2 (Perform spirometry). It is probably COPD.", "It is probably COPD.", 2),
        ("The correct answer is 1, since the indications include failure.", "The indications include failure.", 1),
        ("Correct Answer 1: Given that this is a fracture, replace it.", "Given that this is a fracture, replace it.", 1),
        ("In this case I believe that the correct answer is 5. The 1 should not be.", "The 1 should not be.", 5),
        ("The best answer to this question is number 5. Most lesions regress.", "Most lesions regress.", 5),
        ("The answer is 4, fourth. This is due to tissue.", "This is due to tissue.", 4),
        ("The answer is 3, mature cystic teratoma. This is due to tissue.", "Mature cystic teratoma. This is due to tissue.", 3),
        # Not an answer statement: untouched
        ("Answer 1 is incorrect because imaging comes first.", "Answer 1 is incorrect because imaging comes first.", None),
        ("Reading the case, we discard options.", "Reading the case, we discard options.", None),
        ("Wiskott-Aldrich syndrome associates immunodeficiency.", "Wiskott-Aldrich syndrome associates immunodeficiency.", None),
    ],
)
def test_reasoning_from_explanation(explanation, reasoning, stated):
    options = {1: "First.", 2: "Perform spirometry.", 3: "IgA nephropathy.", 4: "Fourth.", 5: "Fifth."}
    assert casimedicos.reasoning_from_explanation(explanation, options, 3) == (reasoning, stated)


def test_reasoning_keeps_a_sentence_that_only_starts_like_the_option():
    options = {1: "Wiskott-Aldrich syndrome.", 2: "b", 3: "c", 4: "d", 5: "e"}
    text = "The correct answer is 1. Wiskott-Aldrich syndrome associates immunodeficiency, thrombopenia."
    assert casimedicos.reasoning_from_explanation(text, options, 1)[0] == "Wiskott-Aldrich syndrome associates immunodeficiency, thrombopenia."


def test_casimedicos_flags_an_explanation_that_names_another_option(tmp_path):
    src = (FIXTURES / casimedicos.FOLDER / "dev.tsv").read_text(encoding="utf-8")
    case = casimedicos.parse_cases(FIXTURES / casimedicos.FOLDER / "dev.tsv", "dev")[0]
    wrong = 1 if case.correct != 1 else 2
    header = f"CORRECT O\nANSWER: O\n{case.correct} O\n\n"
    assert header in src
    extra = f"The O\ncorrect O\nanswer O\nis O\n{wrong}. O\n\n"
    (tmp_path / "dev.tsv").write_text(src.replace(header, header + extra, 1), encoding="utf-8")
    rec = casimedicos.read(tmp_path, "dev")[0]
    assert casimedicos.DISAGREES_FLAG in rec.flags
    assert rec.correct == "ABCDE"[case.correct - 1]  # the key wins


@pytest.mark.parametrize(
    ("label", "subject"),
    [
        ("DIGESTIVE", "Gastroenterology"),
        ("DIGESTIVE SYSTEM", "Gastroenterology"),
        ("DIGESTIVE TRACT", "Gastroenterology"),
        ("GYNECOLOGY AND OBSTETRICS", "Obstetrics and Gynecology"),
        ("OBSTETRICS AND GYNECOLOGY", "Obstetrics and Gynecology"),
        ("OPHTHALMOLOGY (ECTOPIC)", "Ophthalmology"),
        ("PNEUMOLOGY AND THORACIC SURGERY", "Pulmonology"),
        ("ANESTHESIOLOGY, CRITICAL CARE AND EMERGENCIES", "Anesthesiology and Critical Care"),
        ("SPACE MEDICINE AND OF HEALTH", "Space Medicine and of Health"),
    ],
)
def test_clean_subject(label, subject):
    assert casimedicos.clean_subject(label) == subject


def test_casimedicos_subjects_of_fixture_are_clean():
    records = [r for split in casimedicos.SPLITS for r in casimedicos.read(FIXTURES / casimedicos.FOLDER, split)]
    assert all(r.subject and r.subject != r.subject.upper() for r in records)
    assert {r.tags[0] for r in records} == {"casimedicos-train", "casimedicos-dev", "casimedicos-test"}


# -- MedQA / MedMCQA / MMLU ------------------------------------------------------------------------------


def test_medqa_joins_the_step_by_question_text():
    steps = medqa.read_steps(FIXTURES / medqa.STEP_FILE)
    records = medqa.read(FIXTURES / medqa.FILE, steps)
    raw = raw_lines(medqa.FILE)
    step_rows = {r["question"]: r for r in raw_lines(medqa.STEP_FILE)}
    assert len(records) == 3
    for rec, row in zip(records, raw):
        assert rec.options == dict(zip("ABCD", row["choices"]))
        assert rec.correct == row["answer"][0].upper()
        expected_step = step_rows[row["problem_text"]]["meta_info"]
        assert rec.tags == [expected_step]
        assert rec.subject == medqa.STEPS[expected_step]
        # the 5-option copy agrees on the answer text
        assert rec.options[rec.correct] == step_rows[row["problem_text"]]["answer"]
    assert {r.tags[0] for r in records} == {"step1", "step2&3"}


def test_medqa_without_step_file_warns_and_leaves_tags_empty(caplog):
    with caplog.at_level(logging.WARNING):
        records = medqa.read(FIXTURES / medqa.FILE, {})
    assert all(r.tags == [] and r.subject == "" for r in records)
    assert "no Step tag" in caplog.text


def test_mmlu_has_no_subject():
    records = mmlu.read(FIXTURES / mmlu.FILE)
    raw = raw_lines(mmlu.FILE)
    assert [r.correct for r in records] == [row["answer"][0].upper() for row in raw]
    assert all(r.subject == "" and r.kind == "mcq" and r.license == "MIT" for r in records)


def test_medmcqa_copy_has_no_subject_field():
    assert all(set(row) == {"problem_id", "problem_text", "choices", "answer", "points", "text_only"} for row in raw_lines(medmcqa.FILE))
    assert all(r.subject == "" for r in medmcqa.read(FIXTURES / medmcqa.FILE))


def test_medmcqa_ocr_damage_is_flagged_not_fixed():
    records = medmcqa.read(FIXTURES / medmcqa.FILE)
    before = [(r.question, dict(r.options)) for r in records]
    counts = medmcqa.flag_ocr(records, medmcqa.vocabulary([]))
    assert [(r.question, r.options) for r in records] == before  # text untouched
    damaged = [r for r in records if " aery" in " ".join([r.question, *r.options.values()])]
    assert damaged and all(medmcqa.OCR_FLAG in r.flags for r in damaged)
    clean = next(r for r in records if r.question.startswith("Which of the following is not true for myelinated"))
    assert medmcqa.OCR_FLAG not in clean.flags
    assert counts["aery"] >= 1


@pytest.mark.parametrize(
    ("text", "suspects"),
    [
        ("Blood supply by the aery of the cailage", ["aery", "cailage"]),
        ("Sta treatment now", ["Sta"]),
        ("The artery of the heart", []),
        ("Hyperopia is a refractive error", []),
    ],
)
def test_suspect_words(text, suspects):
    assert medmcqa.suspect_words(text, medmcqa.vocabulary([])) == suspects


def test_vocabulary_from_other_sources_extends_the_builtin_list():
    known = medmcqa.vocabulary(["the aortoiliac segment", "aortoiliac disease"])
    assert medmcqa.suspect_words("aooiliac occlusion", known) == ["aooiliac"]
    assert medmcqa.suspect_words("aooiliac occlusion", medmcqa.vocabulary([])) == []


# -- PubMedQA ------------------------------------------------------------------------------------------


def test_pubmedqa_items_are_yes_no_maybe_mcqs_with_context_and_explanation():
    labels = pubmedqa.read_test_ids(FIXTURES / pubmedqa.TEST_FILE)
    records = pubmedqa.read(FIXTURES / pubmedqa.FILE, labels)
    raw = json.loads((FIXTURES / pubmedqa.FILE).read_text(encoding="utf-8"))
    assert len(records) == len(raw) == 3
    for rec, (pmid, row) in zip(records, raw.items()):
        assert rec.options == {"A": "yes", "B": "no", "C": "maybe"}
        assert rec.options[rec.correct] == row["final_decision"]
        assert rec.explanation == row["LONG_ANSWER"].strip()
        for label, paragraph in zip(row["LABELS"], row["CONTEXTS"]):
            assert f"{label}: {paragraph.strip()}" in rec.context
        assert ("official-test" in rec.tags) == (pmid in labels)
        assert pmid in rec.origin
    assert sum("official-test" in r.tags for r in records) == 2


def test_pubmedqa_label_conflict_with_test_file_is_an_error():
    labels = pubmedqa.read_test_ids(FIXTURES / pubmedqa.TEST_FILE)
    pmid = next(iter(labels))
    wrong = {"yes": "no", "no": "yes", "maybe": "yes"}[labels[pmid]]
    with pytest.raises(DataError, match="final_decision"):
        pubmedqa.read(FIXTURES / pubmedqa.FILE, {pmid: wrong})


# -- malformed input: file, line and field ------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _good_row() -> dict:
    return {"problem_id": 1, "problem_text": "Q?", "choices": ["a1", "b1", "c1", "d1"], "answer": ["b"], "points": 1}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.pop("problem_text"), "problem_text"),
        (lambda r: r.update(problem_text=7), "problem_text"),
        (lambda r: r.update(choices="abcd"), "choices"),
        (lambda r: r.update(choices=["a1", ""]), "choices.B"),
        (lambda r: r.update(answer=["z"]), "answer"),
        (lambda r: r.update(answer="b"), "answer"),
    ],
)
def test_benchmark_row_errors_name_file_line_and_field(tmp_path, mutate, field):
    bad = _good_row()
    mutate(bad)
    path = _write(tmp_path, "bench.jsonl", json.dumps(_good_row()) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError) as err:
        list(aistairc.iter_rows(path))
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 3, field)
    assert f"{path}, line 3, field '{field}'" in str(err.value)


def test_invalid_json_line_names_the_line(tmp_path):
    path = _write(tmp_path, "bench.jsonl", json.dumps(_good_row()) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bench\.jsonl, line 2: invalid JSON"):
        list(aistairc.iter_rows(path))


def test_json_array_errors_point_at_the_record(tmp_path):
    rows = json.loads((FIXTURES / huatuo_demo.FILE).read_text(encoding="utf-8"))
    del rows[2]["Complex_CoT"]
    text = json.dumps(rows, indent=4, ensure_ascii=False)
    path = _write(tmp_path, "demo_data.json", text)
    with pytest.raises(DataError) as err:
        huatuo_demo.read(path)
    start = text.splitlines().index("    {", 1 + text.splitlines().index("    {", 1 + text.splitlines().index("    {")))
    assert err.value.line == start + 1 and err.value.field == "Complex_CoT"


def test_iter_json_items_reports_lines_and_keys(tmp_path):
    path = _write(tmp_path, "x.json", '{\n  "a": 1,\n\n  "b": {"c": [1,\n 2]},\n  "d": "e"\n}\n')
    assert list(iter_json_items(path)) == [(2, "a", 1), (4, "b", {"c": [1, 2]}), (6, "d", "e")]
    bad = _write(tmp_path, "y.json", '[\n 1,\n 2\n 3]\n')
    with pytest.raises(DataError, match=r"y\.json, line 4: expected ','"):
        list(iter_json_items(bad))


def test_casimedicos_bad_tag_names_the_line(tmp_path):
    lines = (FIXTURES / casimedicos.FOLDER / "dev.tsv").read_text(encoding="utf-8").splitlines()
    lines[9] = lines[9].rsplit(" ", 1)[0] + " X-Claim"
    _write(tmp_path, "dev.tsv", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        casimedicos.read(tmp_path, "dev")
    assert (err.value.line, err.value.field) == (10, "tag")


def test_casimedicos_missing_option_names_the_case(tmp_path):
    text = (FIXTURES / casimedicos.FOLDER / "dev.tsv").read_text(encoding="utf-8")
    case = casimedicos.parse_cases(FIXTURES / casimedicos.FOLDER / "dev.tsv", "dev")[1]
    option = text.index("\n3- ", text.index("QUESTION", 5))
    broken = text[:option] + "\nthree- " + text[option + 4:]
    _write(tmp_path, "dev.tsv", broken)
    with pytest.raises(DataError) as err:
        casimedicos.read(tmp_path, "dev")
    assert err.value.field == "options" and err.value.line == case.line


def test_pubmedqa_bad_decision_names_pmid_and_field(tmp_path):
    raw = json.loads((FIXTURES / pubmedqa.FILE).read_text(encoding="utf-8"))
    pmid = list(raw)[1]
    raw[pmid]["final_decision"] = "perhaps"
    path = _write(tmp_path, "ori_pqal.json", json.dumps(raw, indent=4))
    with pytest.raises(DataError, match=rf"PubMed id {pmid}.*field 'final_decision'"):
        pubmedqa.read(path)


def test_ids_are_stable_across_whitespace_and_case():
    records = mmlu.read(FIXTURES / mmlu.FILE)
    rec = records[0]
    again = mmlu.read(FIXTURES / mmlu.FILE)[0]
    assert rec.id == again.id
    assert normalise(rec.question.upper() + "  ") == normalise(rec.question)
