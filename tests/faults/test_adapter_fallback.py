"""A corrupted or mismatched adapter: the base model is served alone, the reason is shown, history says "no adapter".

Real files, real loading: a tiny Llama with a tokenizer (``tests.trainer.conftest.build_tiny_llama``)
and a real LoRA adapter (``tests.tiny.make_lora_adapter``), then one kind of damage per case. The
page test serves the tiny model through the real ``app.resources.get_served_model`` and generates
a few real tokens.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import Session, select

from app import resources
from core import model as model_lib
from core.prompts import PROMPT_FORMAT_VERSION
from storage.models import CaseRun
from tests.pages.auth_harness import add_user, app_as, app_environment
from tests.tiny import make_lora_adapter
from tests.trainer.conftest import build_tiny_llama

REAL_GET_SERVED_MODEL = resources.get_served_model  # before app_environment replaces it with a fake
PAGE = "pages/case_study.py"
IDS = [[1, 5, 9, 12, 40]]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("faults-tiny") / "tiny-base")


@pytest.fixture
def adapter(tiny_base: Path, tmp_path: Path) -> Path:
    return make_lora_adapter(tiny_base, tmp_path / "medcot-adapter", base_identity=tiny_base.name)


def _truncate_weights(a: Path) -> None:
    weights = a / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])


def _garbage_weights(a: Path) -> None:
    (a / "adapter_model.safetensors").write_bytes(b"\x00\xffnot safetensors at all" * 40)


def _bad_config(a: Path) -> None:
    (a / "adapter_config.json").write_text('{"peft_type": "LORA", "r": ')


def _no_card(a: Path) -> None:
    (a / model_lib.CARD_FILE).unlink()


def _bad_card(a: Path) -> None:
    (a / model_lib.CARD_FILE).write_text("[1, 2, 3]")


def _other_base(a: Path) -> None:
    (a / model_lib.CARD_FILE).write_text(json.dumps({"base_model": "meta-llama/Llama-3.2-1B-Instruct",
                                                      "prompt_format": PROMPT_FORMAT_VERSION}))


def _other_format(a: Path) -> None:
    card = json.loads((a / model_lib.CARD_FILE).read_text())
    (a / model_lib.CARD_FILE).write_text(json.dumps({**card, "prompt_format": "chatml-v0"}))


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated weights": (_truncate_weights, "weights of adapter medcot-adapter could not be loaded"),
    "garbage weights": (_garbage_weights, "weights of adapter medcot-adapter could not be loaded"),
    "invalid adapter_config.json": (_bad_config, "adapter_config.json of adapter medcot-adapter is not valid JSON"),
    "missing card": (_no_card, "has no adapter_card.json"),
    "invalid card": (_bad_card, "is not a JSON object"),
    "card for another base": (_other_base, "Llama-3.2-1B-Instruct"),
    "card for another prompt format": (_other_format, "prompt format 'chatml-v0'"),
}


def _logits(model):
    import torch

    with torch.no_grad():
        return model(torch.tensor(IDS)).logits


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_an_unusable_adapter_falls_back_to_the_base_model_with_the_reason(damage, tiny_base, adapter):
    import torch

    base = model_lib.BaseModel(identity=tiny_base.name, location=str(tiny_base))
    plain, _ = model_lib.load_model(base)
    adapted, _, problem = model_lib.load_model_or_base(base, adapter_dir=adapter)
    assert problem is None and not torch.allclose(_logits(plain), _logits(adapted))  # the adapter matters

    corrupt, expected = DAMAGE[damage]
    corrupt(adapter)
    model, tokenizer, problem = model_lib.load_model_or_base(base, adapter_dir=adapter)
    assert problem is not None and expected in problem, problem
    assert torch.equal(_logits(model), _logits(plain))  # exactly the base model, no half-applied LoRA
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert tokenizer.chat_template


def test_a_missing_adapter_folder_falls_back_too(tiny_base, tmp_path):
    base = model_lib.BaseModel(identity=tiny_base.name, location=str(tiny_base))
    _, _, problem = model_lib.load_model_or_base(base, adapter_dir=tmp_path / "gone")
    assert problem is not None and "adapter_config.json is missing" in problem


def test_a_base_model_that_cannot_load_still_raises(tmp_path, adapter):
    broken = tmp_path / "broken-base"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    base = model_lib.BaseModel(identity=adapter.name, location=str(broken))
    with pytest.raises(model_lib.BaseModelLoadError, match="could not be loaded"):
        model_lib.load_model_or_base(base, adapter_dir=None)
    _other_base(adapter)  # an adapter problem and a broken base: the base error wins, nothing is served
    with pytest.raises(model_lib.BaseModelLoadError):
        model_lib.load_model_or_base(base, adapter_dir=adapter)


# -- the app: resources and the case-study page ------------------------------------------------------------------


@pytest.fixture
def app_env(monkeypatch, tmp_path, tiny_base, adapter):
    """A signed-in student; the settings serve the tiny base with ``adapter``; the real get_served_model."""
    gen = app_environment(monkeypatch, tmp_path / "work", base_model=str(tiny_base), adapter=str(adapter),
                          max_new_tokens="6", device="cpu")
    engine = next(gen)
    monkeypatch.setattr(resources, "get_served_model", REAL_GET_SERVED_MODEL)
    yield engine, add_user(engine, "sam")
    next(gen, None)


def test_the_served_model_records_the_fallback(app_env, adapter):
    _truncate_weights(adapter)
    settings = resources.get_settings()
    served = resources.get_served_model(settings.base_model, resources.active_adapter_path(), "cpu")
    assert served.adapter_dir is None and served.adapter_card is None
    assert served.adapter_name == "none (base model)" and served.requested_adapter == "medcot-adapter"
    assert "could not be loaded" in (served.adapter_problem or "")


def test_case_study_shows_the_banner_generates_with_the_base_and_saves_no_adapter(app_env, adapter):
    engine, student = app_env
    _other_base(adapter)
    at = app_as(student, PAGE, cs_ack=True, cs_case="A 30-year-old has fever and a stiff neck. Diagnosis?")
    at.run()
    banner = " ".join(w.value for w in at.warning)
    assert "Adapter `medcot-adapter` cannot be used" in banner and "serving the base model without it" in banner
    assert "Llama-3.2-1B-Instruct" in banner
    assert not at.exception and not at.error
    assert "adapter: `none (base model)`" in " ".join(c.value for c in at.caption)

    at.button(key="cs_generate").click().run()
    assert not at.exception and not at.error
    with Session(engine) as session:
        (run,) = session.exec(select(CaseRun)).all()
    assert run.adapter == "none (base model)" and run.base_model == "tiny-base"
    assert run.timings["tokens"] >= 1


def test_a_base_model_that_cannot_load_gives_the_clear_error(app_env, monkeypatch, tmp_path):
    _engine, student = app_env
    broken = tmp_path / "broken-base"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    monkeypatch.setenv("MEDSTUDY_BASE_MODEL", str(broken))
    resources.get_settings.clear()
    at = app_as(student, PAGE, cs_ack=True)
    at.run()
    errors = " ".join(e.value for e in at.error)
    assert "The model could not be loaded" in errors and "could not be loaded from" in errors
    assert not at.exception
    assert not at.text_area  # no case form without a model
