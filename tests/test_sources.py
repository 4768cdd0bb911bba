import json

from training.data import is_hard_case
from training.sources import load_sources


def test_sources_are_filtered_relabelled_and_split(tmp_path):
    lines = ["好", "这个东西质量太差了", "快递很慢，不满意", "这个东西质量太差了", "包装破了，气死了"] + [
        f"第{i}条差评理由" for i in range(40)
    ]
    (tmp_path / "reviews.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "abuse.csv").write_text("id,TEXT,label\n1,你们这些人真是的,1\n2,ok,0\n", encoding="utf-8")
    config = {
        "sources": [
            {"name": "reviews", "path": "reviews.txt", "weak_label": "complaint", "min_chars": 3, "train_lines": 10},
            {"name": "abuse", "path": "abuse.csv", "column": "TEXT", "weak_label": "normal", "min_chars": 3},
            {"name": "absent", "package": "no_such_package_here", "path": "x.txt", "weak_label": "normal"},
            {"name": "capped", "path": "reviews.txt", "weak_label": "complaint", "min_chars": 3, "held_out_lines": 5},
        ]
    }
    (tmp_path / "sources.json").write_text(json.dumps(config), encoding="utf-8")
    relabels = [
        {"source": "reviews", "line": 3, "label": "normal", "note": "not a complaint"},
        {"source": "reviews", "line": 5, "label": "complaint", "predicted": "extortion", "note": "read after a model flagged it"},
    ]
    (tmp_path / "relabels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in relabels), encoding="utf-8")

    loaded = load_sources(tmp_path / "sources.json", tmp_path / "relabels.jsonl")
    train, held_out = loaded["reviews"]
    everything = train + held_out
    assert len(everything) == 43  # "好" too short, the repeated line dropped
    assert 3 <= len(train) <= 20
    by_id = {m.id: m for m in everything}
    assert by_id["reviews:3"].label == "normal" and by_id["reviews:2"].label == "complaint"
    assert not is_hard_case(by_id["reviews:3"]) and not is_hard_case(by_id["reviews:2"])
    assert is_hard_case(by_id["reviews:5"])  # the model's wrong flag makes it weigh more in training
    assert all(m.source == "external:reviews" for m in everything)
    assert loaded["abuse"][0] == [] and [m.id for m in loaded["abuse"][1]] == ["abuse:2"]  # CSV line 2, below the header
    assert loaded["absent"] == ([], [])
    assert loaded["capped"][0] == [] and [m.id for m in loaded["capped"][1]] == ["capped:2", "capped:3", "capped:5", "capped:6", "capped:7"]


def test_flag_real_lists_every_scored_line_by_source_and_line_never_its_text(tmp_path, tiny_model_dir, capsys):
    from serve.cli import main

    lines = [f"第{i}条评价，东西还行吧" for i in range(30)]
    (tmp_path / "reviews.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {"sources": [{"name": "reviews", "path": "reviews.txt", "weak_label": "complaint", "train_lines": 10, "held_out_lines": 5}]}
    (tmp_path / "sources.json").write_text(json.dumps(config), encoding="utf-8")
    out = tmp_path / "flagged.jsonl"

    from model.classifier import ExtortionClassifier
    from training.real_text import flag_real_text

    records = list(flag_real_text(ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu"), tmp_path / "sources.json", None))
    assert sorted(r["line"] for r in records) == list(range(1, 31))  # held_out_lines does not cap what is scored
    assert 3 <= sum(r["split"] == "train" for r in records) <= 20
    held_out = list(
        flag_real_text(
            ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu"), tmp_path / "sources.json", None, held_out_only=True
        )
    )
    assert len(held_out) == 5 and {r["split"] for r in held_out} == {"held-out"}
    assert all(
        set(r) == {"source", "line", "split", "label", "predicted", "p_extortion", "p_coercion", "p_complaint", "p_normal"} for r in records
    )

    assert (
        main(
            [
                "data",
                "flag-real",
                "--model",
                str(tiny_model_dir),
                "--sources",
                str(tmp_path / "sources.json"),
                "--relabels",
                "none",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    flagged = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in flagged] == [r["line"] for r in records if r["predicted"] in ("extortion", "coercion")]
    assert "东西还行" not in out.read_text(encoding="utf-8") + capsys.readouterr().err


def test_a_relabel_with_an_unknown_predicted_label_names_the_file_and_line(tmp_path):
    import pytest

    from training.sources import read_relabels

    path = tmp_path / "relabels.jsonl"
    path.write_text(json.dumps({"source": "reviews", "line": 4, "label": "complaint", "predicted": "threat"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"relabels.jsonl:1: predicted 'threat'"):
        read_relabels(path)


def test_a_dialogue_file_gives_one_field_of_each_line_with_the_word_segmentation_spaces_removed(tmp_path):
    (tmp_path / "qa.txt").write_text("什么 时候 发货 啊\t在 的 客官\n这个 iphone x 质量 怎么样\t不错 的\nno tab here\n", encoding="utf-8")
    config = {
        "sources": [
            {"name": "questions", "path": "qa.txt", "field": 0, "segmented": True, "weak_label": "normal"},
            {"name": "answers", "path": "qa.txt", "field": -1, "weak_label": "normal", "min_chars": 3},
        ]
    }
    (tmp_path / "sources.json").write_text(json.dumps(config), encoding="utf-8")
    loaded = load_sources(tmp_path / "sources.json")
    assert [m.text for m in loaded["questions"][1]] == ["什么时候发货啊", "这个iphone x质量怎么样", "no tab here"]
    assert [m.text for m in loaded["answers"][1]] == ["在 的 客官", "不错 的", "no tab here"]
