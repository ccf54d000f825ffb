"""MedQuAD reader: both XML spellings, site names, whitespace, what is dropped, malformed files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.datasets import medquad
from core.datasets.base import DataError

GARD = """<?xml version="1.0" encoding="UTF-8"?>
<Document id="0000001" source="GARD" url="https://rarediseases.info.nih.gov/gard/1/gout">
<Focus>Gout</Focus>
<QAPairs>
<QAPair pid="1"><Question qid="0000001-1" qtype="information">What is (are) Gout ?</Question>
<Answer>Gout is a form of arthritis.    Key Points    - Uric acid crystals build up.    -  Joints swell.</Answer></QAPair>
<QAPair pid="2"><Question qid="0000001-2" qtype="treatment">What are the treatments for Gout ?</Question>
<Answer>These resources address the diagnosis or management of Gout:  - Genetic Testing Registry</Answer></QAPair>
<QAPair pid="3"><Question qid="0000001-3" qtype="symptoms">What are the symptoms of Gout ?</Question>
<Answer>   </Answer></QAPair>
<QAPair pid="4"><Question qid="0000001-4" qtype="information">what is (are) gout ?</Question>
<Answer>Gout is a form of arthritis.    Key Points    - Uric acid crystals build up.    -  Joints swell.</Answer></QAPair>
</QAPairs>
</Document>
"""

MPLUS = """<?xml version="1.0" encoding="UTF-8"?>
<Document id="0000001" source="MPlusHealthTopics" url="https://www.nlm.nih.gov/medlineplus/a1c.html">
<Focus>A1C</Focus>
<FocusAnnotations><Category>Other</Category><Synonyms><Synonym>Glycohemoglobin</Synonym><Synonym>HbA1c</Synonym></Synonyms></FocusAnnotations>
<QAPairs><QAPair pid="1"><Question qid="0000001-1" qtype="information">Do you have information about A1C</Question>
<Answer>Summary : A1C is a blood test for type 2 diabetes &amp; prediabetes.</Answer></QAPair></QAPairs>
</Document>
"""

# The older spelling four NINDS files use.
NINDS_OLD = """<?xml version="1.0" encoding="UTF-8"?>
<doc docid="0000007" corpus="NINDS" url="http://www.ninds.nih.gov/disorders/holmes_adie/holmes_adie.htm">
<doctitle-focus>Holmes-Adie</doctitle-focus>
<qaPairs><pair pid="1"><question qid="0000007-1" qtype="information">what is holmes-adie syndrome ?</question>
<answer>Holmes-Adie syndrome is a neurological disorder affecting the pupil.</answer></pair></qaPairs>
</doc>
"""

CDC_ROOT = """<?xml version="1.0" encoding="UTF-8"?>
<DiseaseFile fid="0000397" source="CDC" url="http://www.cdc.gov/parasites/taeniasis/">
<Focus></Focus>
<QAPairs><QAPair pid="1"><Question qid="0000397-1" qtype="information">What is (are) Taeniasis ?</Question>
<Answer>Taeniasis is a tapeworm infection.</Answer></QAPair></QAPairs>
</DiseaseFile>
"""


def write(folder: Path, rel: str, text: str) -> Path:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def medquad_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "medquad"
    write(folder, "2_GARD_QA/0000001.xml", GARD)
    write(folder, "4_MPlus_Health_Topics_QA/0000001.xml", MPLUS)
    write(folder, "6_NINDS_QA/0000007.xml", NINDS_OLD)
    write(folder, "9_CDC_QA/0000397.xml", CDC_ROOT)
    return folder


def test_reads_both_schemas_with_site_names_and_metadata(medquad_dir: Path):
    result = medquad.read_medquad(medquad_dir)
    by_source = {p.source: p for p in result.pairs}
    assert set(by_source) == {"GARD", "MPlusHealthTopics", "NINDS", "CDC"}
    assert [by_source[s].site for s in ("GARD", "MPlusHealthTopics", "NINDS", "CDC")] == [
        "GARD (NCATS)", "MedlinePlus", "NINDS", "CDC"]
    old = by_source["NINDS"]
    assert (old.focus, old.doc_id, old.pid, old.qtype) == ("Holmes-Adie", "NINDS-0000007", "1", "information")
    assert old.url == "http://www.ninds.nih.gov/disorders/holmes_adie/holmes_adie.htm"
    mplus = by_source["MPlusHealthTopics"]
    assert mplus.synonyms == ("Glycohemoglobin", "HbA1c")
    assert mplus.answer == "Summary : A1C is a blood test for type 2 diabetes & prediabetes."
    assert mplus.origin == "medquad/4_MPlus_Health_Topics_QA/0000001.xml"
    assert by_source["CDC"].focus == ""  # three real CDC files have an empty Focus


def test_boilerplate_empty_and_duplicate_answers_are_dropped(medquad_dir: Path):
    result = medquad.read_medquad(medquad_dir)
    gard = [p for p in result.pairs if p.source == "GARD"]
    assert [p.pid for p in gard] == ["1"]
    assert result.dropped == {"boilerplate": 1, "empty": 1, "duplicate": 1}
    assert result.documents == 4


def test_flattened_whitespace_becomes_lines_and_bullets(medquad_dir: Path):
    gard = next(p for p in medquad.read_medquad(medquad_dir).pairs if p.source == "GARD")
    assert gard.answer == "Gout is a form of arthritis.\nKey Points\n- Uric acid crystals build up.\n- Joints swell."
    assert medquad.clean_text("a  b\t c \r\n\n d") == "a b c\nd"


def test_document_ids_come_from_file_names_so_repeated_id_attributes_stay_apart(medquad_dir: Path):
    # Seven real CancerGov files all say id="0000013_2".
    write(medquad_dir, "2_GARD_QA/0000001_2.xml", GARD.replace("Gout", "Pseudogout"))
    pairs = medquad.read_medquad(medquad_dir).pairs
    assert {p.doc_id for p in pairs if p.source == "GARD"} == {"GARD-0000001", "GARD-0000001_2"}
    assert {p.focus for p in pairs if p.doc_id == "GARD-0000001_2"} == {"Pseudogout"}


@pytest.mark.parametrize(
    "text, problem",
    [
        (GARD.replace("</Document>", ""), "malformed XML"),
        ("<Document id='1' source='GARD'", "malformed XML"),
        (GARD.replace('url="https://rarediseases.info.nih.gov/gard/1/gout"', 'url="javascript:alert(1)"'), "URL"),
        (GARD.replace(' source="GARD"', ""), "missing document attribute"),
        ("<?xml version='1.0'?><html/>", "expected a <Document>"),
        (GARD.replace("What is (are) Gout ?", ""), "Question"),
    ],
)
def test_a_malformed_file_raises_data_error_naming_it(medquad_dir: Path, text: str, problem: str):
    bad = write(medquad_dir, "3_GHR_QA/0000009.xml", text)
    with pytest.raises(DataError) as caught:
        medquad.read_medquad(medquad_dir)
    assert str(bad) in str(caught.value)
    assert problem in str(caught.value)


def test_a_file_that_is_not_utf8_raises_data_error(medquad_dir: Path):
    bad = medquad_dir / "3_GHR_QA" / "0000010.xml"
    bad.parent.mkdir()
    bad.write_bytes(GARD.encode("utf-8").replace(b"Gout is", b"Gout \xff\xfe is"))
    with pytest.raises(DataError, match=re.escape(str(bad))):
        medquad.read_medquad(medquad_dir)


def test_missing_or_empty_folder(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        medquad.read_medquad(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no MedQuAD XML files"):
        medquad.read_medquad(tmp_path / "empty")


@pytest.mark.slow
def test_real_medquad_passages_all_carry_site_url_and_license():
    from core import retrieval
    from core.settings import load_settings

    folder = load_settings().data_dir / medquad.FOLDER
    if not folder.is_dir():
        pytest.skip(f"no MedQuAD folder at {folder}")
    result = medquad.read_medquad(folder)
    # PROVENANCE.md counts 16,407 answered pairs (1,085 boilerplate, 48 exact duplicates) but not the
    # 16 pairs of the four NINDS files in the older spelling: 16,407 + 16 - 1,085 - 48 = 15,290.
    assert result.documents == 5497
    assert result.dropped == {"boilerplate": 1085, "empty": 5, "duplicate": 48}
    assert len(result.pairs) == 15290
    docs, rows = retrieval.corpus_from(result.pairs, [])
    assert len(rows) == 31054  # changes with CHUNK_MAX_CHARS or the chunking rule
    assert len({r[0] for r in rows}) == len(rows)
    index = retrieval.ReferenceIndex(folder=Path("."), info={}, docs=docs, rows=rows, bm25=None, dense=None)
    passages = [index.passage(i) for i in range(len(rows))]
    assert {p.site for p in passages} == set(medquad.SITES.values())
    for p in passages:
        assert p.site and p.license == "CC BY 4.0" and "Ben Abacha" in p.attribution
        assert re.match(r"^https?://\S+$", p.url), p.id
        assert p.title and p.text and len(p.text) <= retrieval.CHUNK_MAX_CHARS
