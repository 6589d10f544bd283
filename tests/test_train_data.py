"""FeatureDataset's compact index and kept-open ark files (asrkit.data.dataset)."""

import pickle

import kaldiio
import kaldiio.matio
import numpy as np
import pytest
import torch

from asrkit.data.dataset import FeatureDataset, PackedTokens, collate
from asrkit.text.tokenizer import Tokenizer, train_tokenizer
from tests.synth import make_feature_dir


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    root = tmp_path_factory.mktemp("feats")
    d = make_feature_dir(root / "train", n_utts=30, seed=0)
    tok = Tokenizer(train_tokenizer(d / "text", root / "tok" / "char", model_type="char"))
    return d, tok


def _count_opens(monkeypatch) -> list[str]:
    opened: list[str] = []
    real = kaldiio.matio.open_like_kaldi

    def counting(name, mode="r"):
        opened.append(str(name))
        return real(name, mode)

    monkeypatch.setattr(kaldiio.matio, "open_like_kaldi", counting)
    return opened


def test_reads_match_kaldiio_and_open_each_ark_once(feats, monkeypatch):
    d, tok = feats
    ref = dict(kaldiio.load_scp(str(d / "feats.scp")).items())  # read before counting
    texts = dict(line.split(" ", 1) for line in (d / "text").read_text().splitlines())
    opened = _count_opens(monkeypatch)
    ds = FeatureDataset(d, tok)
    assert len(ds) == 30 and ds.ids == sorted(ref)
    for _ in range(2):
        for i in range(len(ds)):
            utt, x, toks = ds[i]
            assert x.dtype == torch.float32
            np.testing.assert_array_equal(x.numpy(), ref[utt])
            assert toks == tok.encode(texts[utt]) and isinstance(toks, list)
            assert ds.lengths[i] == len(ref[utt])
    assert len(opened) == 1  # 60 reads, one open of the one ark file
    b = collate([ds[i] for i in range(4)])
    assert b["targets"].shape[0] == 4 and int(b["target_lens"][0]) == len(ds.tokens[0])
    ds.close()
    ds[0]
    assert len(opened) == 2
    # thinned in step (as loop._thin_dataset does for data.dev_max_utts): still the right rows
    keep = list(range(0, len(ds), 3))
    ds.ids = [ds.ids[i] for i in keep]
    ds.lengths = [ds.lengths[i] for i in keep]
    ds.tokens = [ds.tokens[i] for i in keep]
    for i in range(len(ds)):
        utt, x, toks = ds[i]
        np.testing.assert_array_equal(x.numpy(), ref[utt])
        assert toks == tok.encode(texts[utt])


def test_forked_workers_and_pickling_read_the_same(feats):
    d, tok = feats
    ds = FeatureDataset(d, tok)
    want = {ds[i][0]: ds[i][1] for i in range(len(ds))}  # the parent has its file open now
    batches = [list(range(i, min(i + 4, len(ds)))) for i in range(0, len(ds), 4)]
    loader = torch.utils.data.DataLoader(ds, batch_sampler=batches, collate_fn=collate,
                                         num_workers=2, multiprocessing_context="fork")
    for b in loader:
        for j, utt in enumerate(b["ids"]):
            n = int(b["feat_lens"][j])
            assert torch.equal(b["feats"][j, :n], want[utt])
    clone = pickle.loads(pickle.dumps(ds))
    assert clone[3][0] == ds[3][0] and torch.equal(clone[3][1], ds[3][1])


def test_lru_of_open_files_and_other_scp_entries(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    mats = {f"u{i}": rng.normal(size=(10 + i, 3)).astype(np.float32) for i in range(6)}
    lines = []
    for i, (u, m) in enumerate(mats.items()):
        ark = tmp_path / f"feats.{i % 2}.ark"
        with open(ark, "ab") as f:
            off = f.tell() + len(u) + 1
            kaldiio.save_ark(f, {u: m})
        lines.append(f"{u} {ark}:{off}")
    lines[5] += "[2:4]"  # a Kaldi row range: read by kaldiio as it is
    (tmp_path / "feats.scp").write_text("\n".join(lines) + "\n")
    (tmp_path / "utt2num_frames").write_text(
        "".join(f"{u} {len(m)}\n" for u, m in mats.items() if u != "u5") + "u5 3\nu6 9\n")
    opened = _count_opens(monkeypatch)
    ds = FeatureDataset(tmp_path, max_frames=100, min_frames=1, max_open_files=1)
    assert ds.ids == ["u0", "u1", "u2", "u3", "u4", "u5"]  # u6: no feats.scp entry, skipped
    for i in (0, 2, 4, 1, 3):  # one ark, then the other: one open each
        np.testing.assert_array_equal(ds.read_feats(i), mats[ds.ids[i]])
    assert len(opened) == 2 and len(ds._files) == 1
    np.testing.assert_array_equal(ds.read_feats(5), mats["u5"][2:5])
    assert ds.tokens[5] == []


def test_packed_tokens():
    t = PackedTokens()
    for ids in ([3, 4, 5], [], [70000], [1, 2]):
        t.append(ids)
    t.freeze()
    assert len(t) == 4 and t[0] == [3, 4, 5] and t[1] == [] and t[2] == [70000]
    assert t[-1] == [1, 2] and t[1:3] == [[], [70000]] and list(t)[3] == [1, 2]
    assert all(type(x) is int for x in t[0])
    assert t.nbytes == 6 * 4 + 4 * 8
    with pytest.raises(IndexError):
        t[4]
