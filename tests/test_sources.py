import json

from training.sources import load_sources


def test_sources_are_filtered_relabelled_and_split(tmp_path):
    lines = ["好", "这个东西质量太差了", "快递很慢，不满意", "这个东西质量太差了", "包装破了，气死了"] + [f"第{i}条差评理由" for i in range(40)]
    (tmp_path / "reviews.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "abuse.csv").write_text("id,TEXT,label\n1,你们这些人真是的,1\n2,ok,0\n", encoding="utf-8")
    config = {"sources": [
        {"name": "reviews", "path": "reviews.txt", "weak_label": "complaint", "min_chars": 3, "train_lines": 10},
        {"name": "abuse", "path": "abuse.csv", "column": "TEXT", "weak_label": "normal", "min_chars": 3},
        {"name": "absent", "package": "no_such_package_here", "path": "x.txt", "weak_label": "normal"},
        {"name": "capped", "path": "reviews.txt", "weak_label": "complaint", "min_chars": 3, "held_out_lines": 5},
    ]}
    (tmp_path / "sources.json").write_text(json.dumps(config), encoding="utf-8")
    (tmp_path / "relabels.jsonl").write_text(json.dumps({"source": "reviews", "line": 3, "label": "normal", "note": "not a complaint"}) + "\n", encoding="utf-8")

    loaded = load_sources(tmp_path / "sources.json", tmp_path / "relabels.jsonl")
    train, held_out = loaded["reviews"]
    everything = train + held_out
    assert len(everything) == 43  # "好" too short, the repeated line dropped
    assert 3 <= len(train) <= 20
    by_id = {m.id: m for m in everything}
    assert by_id["reviews:3"].label == "normal" and by_id["reviews:2"].label == "complaint"
    assert all(m.source == "external:reviews" for m in everything)
    assert loaded["abuse"][0] == [] and [m.id for m in loaded["abuse"][1]] == ["abuse:2"]  # CSV line 2, below the header
    assert loaded["absent"] == ([], [])
    assert loaded["capped"][0] == [] and [m.id for m in loaded["capped"][1]] == ["capped:2", "capped:3", "capped:5", "capped:6", "capped:7"]
