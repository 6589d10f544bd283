import pytest

from asrkit.text.tokenizer import BLANK_ID, SOS_EOS_ID, UNK_ID, Tokenizer, train_tokenizer
from tests.synth import make_text_file


def test_char_tokenizer_reserved_ids_and_round_trip(tmp_path):
    text = make_text_file(tmp_path / "text", {f"u{i}": s for i, s in enumerate(
        ["HELLO WORLD", "GO LEFT", "YES", "NO WAY", "ERASE C Q"])})
    model = train_tokenizer(text, tmp_path / "tok" / "char", model_type="char", vocab_size=100)
    tok = Tokenizer(model)
    assert tok.sp.id_to_piece(BLANK_ID) == "<blank>"
    assert tok.sp.id_to_piece(UNK_ID) == "<unk>"
    assert tok.sp.id_to_piece(SOS_EOS_ID) == "<sos/eos>"
    ids = tok.encode("HELLO WORLD")
    assert BLANK_ID not in ids and SOS_EOS_ID not in ids
    assert tok.decode(ids) == "HELLO WORLD"
    # blanks and sos/eos inserted by a decoder are dropped
    assert tok.decode([BLANK_ID] + ids + [SOS_EOS_ID]) == "HELLO WORLD"
    # a character never seen in training maps to <unk>
    assert UNK_ID in tok.encode("Z")
    # every distinct character of the training text got its own piece
    assert tok.vocab_size == 3 + len(set("HELLOWORLDGOLEFTYESNOWAYERASECQ")) + 1  # + "▁"


def test_bpe_tokenizer(tmp_path):
    words = ["ONE TWO THREE", "TWO THREE FOUR", "THREE FOUR FIVE", "ONE FIVE"] * 20
    text = make_text_file(tmp_path / "text", {f"u{i:03d}": s for i, s in enumerate(words)})
    tok = Tokenizer(train_tokenizer(text, tmp_path / "bpe", model_type="bpe", vocab_size=30))
    assert tok.vocab_size == 30
    assert tok.decode(tok.encode("ONE TWO FIVE")) == "ONE TWO FIVE"


def test_malformed_text_names_file_and_line(tmp_path):
    text = tmp_path / "text"
    text.write_text("u1 HELLO\nu2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"text:2"):
        train_tokenizer(text, tmp_path / "x")


def test_foreign_model_rejected(tmp_path):
    import sentencepiece as spm

    corpus = tmp_path / "c.txt"
    corpus.write_text("HELLO WORLD\nGO LEFT\n" * 5)
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "plain"),
                                   vocab_size=12, model_type="char", minloglevel=2)
    with pytest.raises(ValueError, match="blank"):
        Tokenizer(tmp_path / "plain.model")
