from model.data_format import Message, Turn
from model.inputs import collapse_whitespace, encode_messages, format_context
from tests.conftest import tiny_tokenizer


def tokens(tokenizer, ids):
    return tokenizer.convert_ids_to_tokens(ids)


def test_message_without_context_encodes_like_plain_text():
    tokenizer = tiny_tokenizer()
    batch = encode_messages(tokenizer, [Message("不给钱就差评")], max_length=64)
    assert batch.input_ids[0] == tokenizer("不给钱就差评")["input_ids"]
    assert batch.truncated == [False]


def test_context_is_the_second_segment_with_role_markers():
    tokenizer = tiny_tokenizer()
    message = Message("我要钱", (Turn("buyer", "给钱"), Turn("seller", "好的")))
    assert format_context(message.context) == "买家:给钱 卖家:好的"
    ids = encode_messages(tokenizer, [message], max_length=64).input_ids[0]
    text = "".join(tokens(tokenizer, ids))
    assert text.index("我要钱") < text.index("买家") < text.index("卖家")


def test_context_loses_its_oldest_tokens_first():
    tokenizer = tiny_tokenizer()
    old, recent = Turn("buyer", "老" * 30), Turn("seller", "发货了")
    batch = encode_messages(tokenizer, [Message("好的", (old, recent))], max_length=20)
    kept = tokens(tokenizer, batch.input_ids[0])
    assert len(kept) == 20
    assert kept[-4:-1] == ["发", "货", "了"] and "好" in kept[:4]
    assert batch.truncated == [False]  # only the context was cut


def test_long_message_is_cut_to_the_window_and_flagged():
    tokenizer = tiny_tokenizer()
    batch = encode_messages(tokenizer, [Message("差" * 100, (Turn("buyer", "在吗"),)), Message("在吗")], max_length=16)
    assert len(batch.input_ids[0]) == 16
    assert batch.truncated == [True, False]


def test_padded_arrays_mask_the_padding():
    tokenizer = tiny_tokenizer()
    arrays = encode_messages(tokenizer, [Message("在吗"), Message("不给钱就差评")], 64).padded(tokenizer.pad_token_id)
    assert arrays["input_ids"].shape == arrays["attention_mask"].shape
    assert arrays["attention_mask"][0].sum() < arrays["attention_mask"][1].sum()
    assert (arrays["input_ids"][0][arrays["attention_mask"][0] == 0] == tokenizer.pad_token_id).all()


def test_whitespace_preparation_collapses_runs():
    assert collapse_whitespace("  不给钱\n\n就\t差评 ") == "不给钱 就 差评"


def test_evasion_preparation_changes_what_the_model_sees():
    tokenizer = tiny_tokenizer()
    disguised = Message("不给钱就差＊评")
    plain = encode_messages(tokenizer, [disguised], 64, "whitespace").input_ids[0]
    prepared = encode_messages(tokenizer, [disguised], 64, "evasion-v1").input_ids[0]
    assert prepared == tokenizer("不给钱就差评")["input_ids"] and plain != prepared


def test_seller_marker_goes_before_a_sellers_message_only_when_the_model_reads_it():
    import pytest

    tokenizer = tiny_tokenizer()
    seller, buyer, unknown = Message("好的", role="seller"), Message("好的", role="buyer"), Message("好的")
    marked = encode_messages(tokenizer, [seller, buyer, unknown], max_length=64, role_marker="seller").input_ids
    assert "".join(tokens(tokenizer, marked[0])).index("卖") < "".join(tokens(tokenizer, marked[0])).index("好")
    assert marked[1] == marked[2] == tokenizer("好的")["input_ids"]
    assert encode_messages(tokenizer, [seller], max_length=64).input_ids[0] == marked[1]  # older models: no marker
    with pytest.raises(ValueError, match="role_marker"):
        encode_messages(tokenizer, [seller], max_length=64, role_marker="both")


def test_score_cache_keys_name_the_senders_role_only_for_models_that_read_it():
    from training.score_cache import message_key

    seller, buyer = Message("好的", role="seller"), Message("好的", role="buyer")
    assert message_key(seller) == message_key(buyer)
    assert message_key(seller, with_role=True) != message_key(buyer, with_role=True)
