from model.data_format import Message
from training.splits import assign_splits, freeze_test, group_ids, near_duplicate_pairs, normalise_for_duplicates, read_frozen_test


def test_normalisation_masks_numbers_and_drops_punctuation():
    assert normalise_for_duplicates("给我转５００！！") == normalise_for_duplicates("给我转八百。") == "给我转0"


def test_near_duplicates_are_found_and_different_texts_are_not():
    texts = ["不给钱我就给你差评，自己看着办", "不给钱我就给你差评，自己看着办吧", "亲，今天下午发货", "给我转300", "给我转500", "在吗"]
    pairs = {tuple(p) for p in near_duplicate_pairs(texts).tolist()}
    assert (0, 1) in pairs and (3, 4) in pairs
    assert not any(2 in p or 5 in p for p in pairs)


def test_near_duplicates_join_their_conversations_into_one_group():
    messages = [
        Message("不给钱我就给你差评，自己看着办", id="a#1"),
        Message("好的", id="a#2"),
        Message("不给钱我就给你差评，自己看着办！", id="b"),
        Message("发货了吗", id="c"),
    ]
    groups = group_ids(messages)
    assert groups[0] == groups[1] == groups[2] == "a" and groups[3] == "c"


def test_frozen_test_split_holds_and_new_messages_never_enter_it(tmp_path):
    messages = [Message(f"第{i}个订单的问题{'甲乙丙丁戊己庚辛壬癸'[i % 10]}{chr(0x4E00 + i * 7)}", id=f"m{i}") for i in range(300)]
    first = assign_splits(messages, None)
    assert 0 < first.count("test") < 60 and first.count("dev") > 0
    path = tmp_path / "test-v1.txt"
    assert freeze_test(messages, first, path, "v1") == first.count("test")
    frozen = read_frozen_test(path)
    grown = messages + [Message(f"新增消息{chr(0x5000 + i * 5)}{chr(0x6000 + i)}", id=f"n{i}") for i in range(100)]
    again = assign_splits(grown, frozen)
    assert again[:300] == first
    assert "test" not in again[300:]
    tied = [*messages, Message(messages[first.index("test")].text + "！", id="near-copy")]
    assert assign_splits(tied, frozen)[-1] == "excluded"  # a near-copy of a test message is held out, not added to test
    assert read_frozen_test(tmp_path / "missing.txt") is None
