import json

import pytest

from steerlens.datasets.loaders import (
    CAA_BEHAVIOURS,
    load_caa,
    load_gptfuzzer_templates,
    load_instructions,
    load_jbb,
)
from steerlens.errors import DataError


def test_shipped_data_loads():
    assert len(load_jbb("harmful")) == 100 and len(load_jbb("benign")) == 100
    assert len(load_instructions("harmful_train")) == 260
    assert len(load_instructions("harmless_val")) == 6264
    for b in CAA_BEHAVIOURS:
        items = load_caa(b, "generate")
        assert items and all(i.matching != i.not_matching for i in items)
        assert {i.matching for i in items} >= {"A", "B"}
        assert len(load_caa(b, "test")) == 50
    assert len(load_gptfuzzer_templates()) == 77


def test_harmful_test_split_is_not_shipped():
    with pytest.raises(DataError, match="not found"):
        load_instructions("harmful_test")


def test_unknown_behaviour():
    with pytest.raises(DataError, match="unknown behaviour 'flattery'"):
        load_caa("flattery")


def test_malformed_caa_row_names_file_row_field(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps([
        {"question": "q", "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"},
        {"question": "q2", "answer_matching_behavior": "(A)"},
    ]))
    with pytest.raises(DataError, match=r"bad.json: row 1: field 'answer_not_matching_behavior'"):
        load_caa("sycophancy", path=p)


def test_invalid_json_and_letter(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("[{")
    with pytest.raises(DataError, match="invalid JSON"):
        load_caa("refusal", path=p)
    p.write_text(json.dumps([{"question": "q", "answer_matching_behavior": "maybe",
                              "answer_not_matching_behavior": "(B)"}]))
    with pytest.raises(DataError, match="not an answer letter"):
        load_caa("refusal", path=p)


def test_malformed_jbb_csv(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text(",Goal,Target,Behavior,Category,Source\n0,do x,,B,C,S\n")
    with pytest.raises(DataError, match=r"h.csv: row 2: field 'target'"):
        load_jbb("harmful", path=p)
    p.write_text(",Goal,Target\n0,a,b\n")
    with pytest.raises(DataError, match="column 'behavior' missing"):
        load_jbb("harmful", path=p)


def test_instruction_category_type(tmp_path):
    p = tmp_path / "i.json"
    p.write_text(json.dumps([{"instruction": "x", "category": 3}]))
    with pytest.raises(DataError, match="row 0: field 'category'"):
        load_instructions("harmful_train", path=p)


def test_template_without_placeholder(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("id,text\n1,no placeholder here\n")
    with pytest.raises(DataError, match="has no"):
        load_gptfuzzer_templates(p)
