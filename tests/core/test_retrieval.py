"""Reference index: chunking, the train-only rule, search, damaged indexes, highlighting, prompt context."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from core import retrieval
from core.prompts import format_references
from core.records import Record
from core.retrieval import INDEX_DIRNAME, MANIFEST_FILE, Passage, RetrievalUnavailable

LONG_ANSWER = " ".join(
    f"Sentence {n} about hemochromatosis explains that iron builds up in the liver, heart and pancreas over many years."
    for n in range(30)
)

GOUT = """<?xml version="1.0" encoding="UTF-8"?>
<Document id="0000001" source="GARD" url="https://rarediseases.info.nih.gov/gard/1/gout">
<Focus>Gout</Focus>
<QAPairs>
<QAPair pid="1"><Question qid="1-1" qtype="information">What is (are) Gout ?</Question>
<Answer>Gout is a form of arthritis caused by uric acid crystals in a joint, often the big toe.</Answer></QAPair>
<QAPair pid="2"><Question qid="1-2" qtype="treatment">What are the treatments for Gout ?</Question>
<Answer>These resources address the diagnosis or management of Gout: Genetic Testing Registry</Answer></QAPair>
</QAPairs>
</Document>
"""

HEMO = f"""<?xml version="1.0" encoding="UTF-8"?>
<Document id="0000002" source="GHR" url="https://ghr.nlm.nih.gov/condition/hemochromatosis">
<Focus>Hereditary hemochromatosis</Focus>
<QAPairs>
<QAPair pid="1"><Question qid="2-1" qtype="information">What is (are) hereditary hemochromatosis ?</Question>
<Answer>{LONG_ANSWER}</Answer></QAPair>
</QAPairs>
</Document>
"""

ASTHMA = """<?xml version="1.0" encoding="UTF-8"?>
<Document id="0000003" source="NHLBI" url="http://www.nhlbi.nih.gov/health/health-topics/topics/asthma">
<Focus>Asthma</Focus>
<QAPairs>
<QAPair pid="1"><Question qid="3-1" qtype="symptoms">What are the symptoms of Asthma ?</Question>
<Answer>Asthma causes wheezing, chest tightness, shortness of breath and coughing, often at night.</Answer></QAPair>
</QAPairs>
</Document>
"""


def train_record(n: int, question: str, reasoning: str, answer: str, *, split: str = "train", source: str = "medical-o1") -> Record:
    return Record(id=f"{source}:{n:016x}", source=source, license="Apache-2.0", question=question, reasoning=reasoning,
                  answer=answer, split=split, attribution=f"{source} attribution line")


TRAIN = [
    train_record(1, "A 30-year-old man has a painless chancre on the penis three weeks after unprotected sex.",
                 "A painless indurated ulcer is the primary lesion of syphilis caused by Treponema pallidum.",
                 "Primary syphilis"),
    train_record(2, "A child has a barking cough and inspiratory stridor.", "Steeple sign suggests croup.", "Croup",
                 source="casimedicos"),
]


def make_medquad(root: Path) -> Path:
    folder = root / "medquad"
    for rel, text in (("2_GARD_QA/0000001.xml", GOUT), ("3_GHR_QA/0000002.xml", HEMO), ("8_NHLBI_QA_XML/0000003.xml", ASTHMA)):
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


@pytest.fixture()
def prepared(tmp_path: Path) -> Path:
    prepared_dir = tmp_path / "prepared"
    retrieval.build_index(prepared_dir / INDEX_DIRNAME, medquad_dir=make_medquad(tmp_path), train=TRAIN)
    return prepared_dir


@pytest.fixture()
def index(prepared: Path) -> retrieval.ReferenceIndex:
    return retrieval.load_index(prepared)


# -- chunking ---------------------------------------------------------------------------------------------


def test_chunks_stay_within_bounds_on_sentence_ends_and_lose_no_word():
    chunks = retrieval.chunk_text(LONG_ANSWER)
    assert len(chunks) > 1
    assert all(500 <= len(c) <= retrieval.CHUNK_MAX_CHARS for c in chunks)
    assert all(c.endswith(".") for c in chunks)
    assert " ".join(chunks).split() == LONG_ANSWER.split()


def test_chunking_keeps_line_breaks_and_cuts_an_endless_sentence_between_words():
    text = "First line.\n\n   Second    line.\n" + "word " * 400
    chunks = retrieval.chunk_text(text)
    assert chunks[0].startswith("First line.\nSecond line.")
    assert all(len(c) <= retrieval.CHUNK_MAX_CHARS for c in chunks)
    assert all(not c.startswith(" ") and not c.endswith(" ") for c in chunks)
    assert "\n".join(chunks).split() == text.split()
    assert retrieval.chunk_text("  short  text ") == ["short text"]
    assert retrieval.chunk_text(" \n ") == []


def test_every_chunk_of_a_long_answer_keeps_the_metadata_and_a_stable_id(index: retrieval.ReferenceIndex):
    rows = [i for i in range(len(index)) if index.passage(i).id.startswith("medquad:GHR-0000002:1:")]
    passages = [index.passage(i) for i in rows]
    assert len(passages) > 1
    assert [p.id for p in passages] == [f"medquad:GHR-0000002:1:{n}" for n in range(len(passages))]
    for p in passages:
        assert (p.title, p.focus, p.site) == ("Hereditary hemochromatosis", "Hereditary hemochromatosis", "Genetics Home Reference")
        assert p.question == "What is (are) hereditary hemochromatosis ?"
        assert p.url == "https://ghr.nlm.nih.gov/condition/hemochromatosis"
        assert p.license == "CC BY 4.0" and "Ben Abacha" in p.attribution and "BMC Bioinformatics 20:511" in p.attribution


def test_boilerplate_is_not_indexed(index: retrieval.ReferenceIndex):
    texts = [index.passage(i).text for i in range(len(index))]
    assert not any("These resources address" in t for t in texts)
    assert index.info["medquad"]["dropped"]["boilerplate"] == 1


# -- the train-only rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["validation", "test", "bank", ""])
def test_records_from_other_splits_are_refused(tmp_path: Path, split: str):
    out = tmp_path / "prepared" / INDEX_DIRNAME
    leaked = train_record(9, "Held-out question?", "Held-out reasoning.", "Held-out answer", split=split)
    with pytest.raises(ValueError, match="train records only"):
        retrieval.build_index(out, medquad_dir=make_medquad(tmp_path), train=[*TRAIN, leaked])
    assert not (out / MANIFEST_FILE).exists()


def test_worked_cases_are_titled_credited_and_searchable(index: retrieval.ReferenceIndex):
    found = index.search("painless chancre ulcer Treponema", k=3)
    assert found and found[0].id == "train:medical-o1:0000000000000001:0"
    case = found[0]
    assert case.title == "Worked case (training data): A 30-year-old man has a painless chancre on the penis …"
    assert case.site == "medical-o1"
    assert case.url == "https://huggingface.co/datasets/FreedomIntelligence/medical-o1-reasoning-SFT"
    assert (case.license, case.attribution) == ("Apache-2.0", "medical-o1 attribution line")
    assert "Primary syphilis" in case.text and "Treponema pallidum" in case.text
    croup = index.search("barking cough stridor", k=1)[0]
    assert (croup.site, croup.url) == ("casimedicos", "")  # the casimedicos reader declares no homepage


# -- search ----------------------------------------------------------------------------------------------


def test_search_ranks_the_matching_passage_first(index: retrieval.ReferenceIndex):
    top = index.search("uric acid crystals in the big toe", k=5)
    assert top[0].id == "medquad:GARD-0000001:1:0"
    assert top[0].score > 0
    assert [p.score for p in top] == sorted((p.score for p in top), reverse=True)
    assert index.search("wheezing at night", k=1)[0].title == "Asthma"
    assert len(index.search("hemochromatosis iron", k=2)) == 2


@pytest.mark.parametrize("query", ["", "   ", "the of and what is it", "😀🩺💊", "!!! ??? ...", "\x00\x01", "a"])
def test_queries_without_content_words_return_nothing(index: retrieval.ReferenceIndex, query: str):
    assert index.search(query) == []


@pytest.mark.parametrize("query", ["zzqx unheardofword", "x" * 5000, "Ωμέγα 中文 עברית", "<script>alert(1)</script>"])
def test_odd_text_never_raises(index: retrieval.ReferenceIndex, query: str):
    assert isinstance(index.search(query), list)


def test_a_6000_character_case_is_searched_quickly(index: retrieval.ReferenceIndex):
    query = ("A 54-year-old man has sudden severe pain and swelling of the big toe with uric acid crystals. " * 80)[:6000]
    assert len(query) == 6000
    start = time.perf_counter()
    found = index.search(query, k=5)
    assert time.perf_counter() - start < 1.0
    assert found[0].title == "Gout"


def test_k_and_unknown_method(index: retrieval.ReferenceIndex):
    assert index.search("gout", k=0) == []
    assert len(index.search("gout asthma hemochromatosis syphilis", k=2)) == 2
    with pytest.raises(ValueError, match="unknown retrieval method"):
        index.search("gout", method="magic")
    # Without embeddings, dense and hybrid answer with BM25.
    assert index.search("gout", method="hybrid")[0].id == index.search("gout", method="bm25")[0].id


def test_manifest_section_describes_the_build(tmp_path: Path):
    section = retrieval.build_index(tmp_path / "idx", medquad_dir=make_medquad(tmp_path), train=TRAIN)
    assert section["passages"] == sum(section["by_site"].values())
    assert section["by_site"]["NHLBI"] == 1 and section["by_site"]["medical-o1"] == 1
    assert section["methods"] == ["bm25"] and section["default_method"] == "bm25"
    json.dumps(section)  # JSON-able: it goes into the prepared data's manifest
    manifest = json.loads((tmp_path / "idx" / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) >= {retrieval.PASSAGES_FILE, f"{retrieval.BM25_DIR}/params.index.json"}


# -- damaged and missing indexes ---------------------------------------------------------------------------


def test_missing_index_is_unavailable(tmp_path: Path):
    with pytest.raises(RetrievalUnavailable, match="no reference index"):
        retrieval.load_index(tmp_path)


def test_a_build_interrupted_before_its_marker_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def interrupted(_folder: Path) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(retrieval, "_files", interrupted)
    with pytest.raises(KeyboardInterrupt):
        retrieval.build_index(tmp_path / INDEX_DIRNAME, medquad_dir=make_medquad(tmp_path), train=TRAIN)
    assert (tmp_path / INDEX_DIRNAME / retrieval.PASSAGES_FILE).is_file()  # everything but the marker
    with pytest.raises(RetrievalUnavailable, match="incomplete"):
        retrieval.load_index(tmp_path)


def test_rebuilding_over_an_old_index_removes_its_marker_first(prepared: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(retrieval.medquad, "read_medquad", lambda _folder: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        retrieval.build_index(prepared / INDEX_DIRNAME, medquad_dir=prepared, train=TRAIN)
    retrieval.load_index(prepared)  # failed before writing anything: the old index is intact

    def half_written(_folder: Path) -> dict:
        raise KeyboardInterrupt

    monkeypatch.undo()
    monkeypatch.setattr(retrieval, "_files", half_written)
    with pytest.raises(KeyboardInterrupt):
        retrieval.build_index(prepared / INDEX_DIRNAME, medquad_dir=make_medquad(prepared.parent), train=TRAIN[:1])
    with pytest.raises(RetrievalUnavailable, match="incomplete"):
        retrieval.load_index(prepared)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle] = (data[middle] + 1) % 256  # same size: only the hash can tell
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _garble])
@pytest.mark.parametrize("name", [retrieval.PASSAGES_FILE, f"{retrieval.BM25_DIR}/data.csc.index.npy",
                                  f"{retrieval.BM25_DIR}/vocab.index.json"])
def test_truncated_or_garbled_files_are_refused(prepared: Path, damage, name: str):
    damage(prepared / INDEX_DIRNAME / name)
    with pytest.raises(RetrievalUnavailable, match="damaged"):
        retrieval.load_index(prepared)


@pytest.mark.parametrize("content", ["{not json", "[]", '{"version": "medstudy-references-v0", "files": {}}', ""])
def test_a_garbled_or_foreign_marker_is_refused(prepared: Path, content: str):
    (prepared / INDEX_DIRNAME / MANIFEST_FILE).write_text(content)
    with pytest.raises(RetrievalUnavailable, match="References are off"):
        retrieval.load_index(prepared)


def test_a_deleted_file_is_refused(prepared: Path):
    (prepared / INDEX_DIRNAME / retrieval.BM25_DIR / "indptr.csc.index.npy").unlink()
    with pytest.raises(RetrievalUnavailable, match="damaged"):
        retrieval.load_index(prepared)


def test_unavailable_messages_tell_the_user_what_to_run(tmp_path: Path):
    with pytest.raises(RetrievalUnavailable) as caught:
        retrieval.load_index(tmp_path)
    assert "python -m core.data prepare" in str(caught.value)
    assert "Traceback" not in str(caught.value) and str(tmp_path) not in str(caught.value)


# -- text helpers ------------------------------------------------------------------------------------------


def test_query_terms_are_lower_case_content_words_once_each():
    assert retrieval.query_terms("What are the SYMPTOMS of Gout? Gout, gout!") == ["symptoms", "gout"]
    assert retrieval.query_terms("the of and 😀") == []


def test_highlight_bolds_query_words_by_stem_and_nothing_else():
    out = retrieval.highlight("Infections of the joint. Infected joints swell.", "joint infection")
    assert out == "**Infections** of the **joint**. **Infected** **joints** swell."
    assert retrieval.highlight("the gout", "the") == "the gout"


def test_highlight_escapes_markdown_and_html():
    text = "Use <script>alert(1)</script> *not* $5 ![x](http://evil/img.png) `code` [link](http://x) # head\nnext"
    out = retrieval.highlight(text, "script head")
    assert "<script>" not in out and "\\<**script**\\>" in out
    assert "\\*not\\*" in out and "\\$5" in out
    assert "\\!\\[x\\]" in out and "\\`code\\`" in out and "\\[link\\]" in out and "\\# **head**" in out
    assert out.endswith("  \nnext")  # line breaks survive markdown


def test_prompt_context_takes_three_passages_cut_on_a_word_boundary():
    passages = [Passage(id=f"p{n}", title=f"Title {n}", focus="", question="", text=("word " * 300) + f"end{n}",
                        site="s", url="", license="CC BY 4.0", attribution="a") for n in range(5)]
    context = retrieval.prompt_context(passages)
    cut = retrieval.truncate(passages[0].text, retrieval.PROMPT_PASSAGE_CHARS)
    assert len(cut) <= retrieval.PROMPT_PASSAGE_CHARS and cut.endswith("word…")
    assert context == format_references([(f"Title {n}", cut) for n in range(3)])
    assert "Title 3" not in context
    assert retrieval.prompt_context([]) == ""


def test_passage_round_trips_and_ignores_unknown_keys():
    p = Passage(id="x", title="t", focus="f", question="q", text="body", site="s", url="https://e", license="l",
                attribution="a", score=1.5)
    assert Passage.from_dict({**p.to_dict(), "extra": 1}) == p


# -- dense and hybrid ---------------------------------------------------------------------------------------


@pytest.mark.slow  # loads the MiniLM encoder (twice)
def test_dense_build_uses_the_cache_and_loads_the_encoder_once(tmp_path: Path):
    medquad_dir = make_medquad(tmp_path)
    cache = tmp_path / "cache"
    first = retrieval.build_index(tmp_path / "a" / INDEX_DIRNAME, medquad_dir=medquad_dir, train=TRAIN, dense=True,
                                  cache_dir=cache)
    extra = train_record(3, "A woman has a malar rash and joint pain.", "Think of lupus.", "SLE")
    more = retrieval.build_index(tmp_path / "b" / INDEX_DIRNAME, medquad_dir=medquad_dir, train=[*TRAIN, extra],
                                 dense=True, cache_dir=cache)
    again = retrieval.build_index(tmp_path / "b" / INDEX_DIRNAME, medquad_dir=medquad_dir, train=[*TRAIN, extra],
                                  dense=True, cache_dir=cache)
    assert first["dense"]["embedded_now"] > 0
    assert more["dense"]["embedded_now"] == 1  # only the new worked case: the rest came from the cache
    assert again["dense"]["embedded_now"] == 0
    assert again["dense"]["unique_texts"] == more["dense"]["unique_texts"] > 1
    assert first["methods"] == ["bm25", "dense", "hybrid"]
    index = retrieval.load_index(tmp_path / "b")
    assert index._encoder is None  # loading stays fast: the encoder comes with the first dense query
    assert index.search("trouble breathing and wheezing", method="dense")[0].title == "Asthma"
    encoder = index._encoder
    assert index.search("swollen big toe", method="hybrid")[0].title == "Gout"
    assert index._encoder is encoder
    assert index.search("😀", method="hybrid") == []
