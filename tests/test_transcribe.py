"""``asrkit transcribe`` and :class:`asrkit.Transcriber` on synthesized audio: a tiny CTC
model and tiny HMM-GMM stages trained on tone "letters" (tests/synth_audio.py); text, CTM and
JSON outputs, input kinds (multi-channel, other rates, directories, lists, arrays), failures,
long recordings cut into capped segments (VAD and energy cuts), the README example and the
long-audio benchmark script."""

from __future__ import annotations

import itertools
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from synth_audio import (
    LETTERS,
    SR,
    make_audio_data_dir,
    synth_speech,
    train_tiny_audio_ctc,
    train_tiny_audio_gmm,
    vowel_speech,
)

from asrkit.cli import main
from asrkit.data.audio import AudioError
from asrkit.data.segment import AudioArray, AudioFile, AudioSegment, cap_regions, speech_regions
from asrkit.decode.transcribe import Transcriber, expand_inputs, utterance_ids

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> Path:
    return train_tiny_audio_ctc(tmp_path_factory.mktemp("ctc"), epochs=20)


@pytest.fixture(scope="module")
def asr(exp) -> Transcriber:
    return Transcriber.from_exp(exp, device="cpu", vad="none", max_segment=20)


def _utterance(seed: int, n: int = 3):
    rng = np.random.default_rng(seed)
    letters = list(rng.choice(list(LETTERS), size=n))
    y, spans = synth_speech(letters, rng)
    return y, [str(c) for c in letters], spans


def _check_times(words, duration):
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    for a, b in itertools.pairwise(words):
        assert a.end <= b.start + 1e-6
    for w in words:
        assert 0.0 <= w.start < w.end <= duration + 1e-6


def _match_truth(words, spans, tol=0.12):
    assert [w.word for w in words] == [c for c, _, _ in spans]
    for w, (_, s, e) in zip(words, spans):
        assert abs(w.start - s) <= tol and abs(w.end - e) <= tol, (w, s, e)


def test_readme_example_runs_as_written(exp, tmp_path, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- transcribe-example.*?-->\n```python\n(.*?)```", readme,
                      re.DOTALL)
    assert block, "README.md lost the transcribe example"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "x").symlink_to(exp)
    y, letters, _ = _utterance(1)
    sf.write("a.wav", y, SR)
    y2, letters2, _ = _utterance(2)
    sf.write("b.flac", y2, SR)
    exec(compile(block.group(1), "README.md", "exec"), {})  # noqa: S102 - the README's own code
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"a {' '.join(letters)} [('{letters[0]}', ")
    assert out[1].startswith(f"b {' '.join(letters2)} [")


def test_api_arrays_channels_and_word_times(asr):
    y, letters, spans = _utterance(3)
    r = asr.transcribe(y, sample_rate=SR)[0]
    assert r.id == "array0" and r.path is None and r.text == " ".join(letters)
    _match_truth(r.words, spans)
    assert all(0.5 < w.conf <= 1.0 for w in r.words)
    # int16 samples; stereo averaged; one channel chosen; a torch tensor
    assert asr.transcribe((y * 32767).astype(np.int16), sample_rate=SR)[0].text == r.text
    stereo = np.stack([y, y], 1)
    assert asr.transcribe(stereo, sample_rate=SR)[0].text == r.text
    y2, letters2, _ = _utterance(13)
    n = min(y.size, y2.size)
    two = np.stack([y[:n], y2[:n]], 1)  # two different channels: pick the second
    picked = Transcriber(asr.backend, vad="none", max_segment=20, channel=1)
    assert picked.transcribe(two, sample_rate=SR)[0].text == " ".join(letters2)
    assert asr.transcribe([torch.from_numpy(y)], sample_rate=SR, ids=["t"])[0].id == "t"
    with pytest.raises(AudioError, match="sample_rate"):
        asr.transcribe(y)
    with pytest.raises(AudioError, match="channel 5"):
        Transcriber(asr.backend, channel=5).transcribe(stereo, sample_rate=SR)


def test_other_sample_rates_are_resampled(asr, tmp_path, caplog):
    y, letters, spans = _utterance(4)
    hi = AF.resample(torch.from_numpy(y), SR, 44100).numpy()
    sf.write(tmp_path / "hi.wav", hi, 44100)
    r = asr.transcribe(tmp_path / "hi.wav")[0]
    assert r.text == " ".join(letters)
    _match_truth(r.words, spans)
    sf.write(tmp_path / "lo.wav", AF.resample(torch.from_numpy(y), SR, 8000).numpy(), 8000)
    with caplog.at_level(logging.WARNING, logger="asrkit"):
        asr.transcribe(tmp_path / "lo.wav")
    assert "upsampled" in caplog.text and "lo.wav" in caplog.text


def test_cli_outputs_inputs_and_failures(exp, tmp_path, capsys):
    audio = tmp_path / "in"
    truth = {}
    for i, (name, sr, ch) in enumerate([("one.wav", SR, 1), ("sub/two.flac", SR, 2),
                                        ("sub/deep/three.wav", 22050, 1)]):
        y, letters, _ = _utterance(10 + i)
        if sr != SR:
            y = AF.resample(torch.from_numpy(y), SR, sr).numpy()
        p = audio / name
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, np.stack([y] * ch, 1) if ch > 1 else y, sr)
        truth[p.stem] = (" ".join(letters), y.size / sr)
    (audio / "notes.txt").write_text("not audio, not an audio extension: skipped\n")
    (audio / "broken.wav").write_text("not audio")  # an audio extension: reported
    out = tmp_path / "out"
    rc = main(["transcribe", str(exp), str(audio), "--out", str(out), "--vad", "none",
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "broken.wav" in err and "cannot read audio" in err
    text = (out / "text").read_text().splitlines()
    assert text == [f"{u} {truth[u][0]}" for u in sorted(truth)]
    failed = (out / "failed").read_text().splitlines()
    assert len(failed) == 1 and failed[0].startswith("broken\t") and "broken.wav" in failed[0]
    js = json.loads((out / "transcripts.json").read_text())
    assert [f["id"] for f in js["files"]] == sorted(truth)
    assert js["failed"][0]["id"] == "broken"
    ctm = [ln.split() for ln in (out / "ctm").read_text().splitlines()]
    for f in js["files"]:
        assert f["text"] == truth[f["id"]][0]
        assert abs(f["duration"] - truth[f["id"]][1]) < 1e-3
        starts = [w["start"] for w in f["words"]]
        assert starts == sorted(starts)
        assert all(0 <= w["start"] < w["end"] <= f["duration"] for w in f["words"])
        rows = [r for r in ctm if r[0] == f["id"]]
        assert [r[4] for r in rows] == f["text"].split()
        assert all(r[1] == "1" and float(r[2]) + float(r[3]) <= f["duration"] + 1e-3
                   for r in rows)
    # a list file (relative paths from its folder) to stdout; every file fine: exit 0
    lst = tmp_path / "list.txt"
    lst.write_text("# my files\nin/one.wav\n\nin/sub/two.flac\n")
    assert main(["transcribe", str(exp), f"@{lst}", "--vad", "none", "--device", "cpu",
                 "--ctm", str(tmp_path / "w.ctm")]) == 0
    assert capsys.readouterr().out.splitlines() == [f"one {truth['one'][0]}",
                                                     f"two {truth['two'][0]}"]
    assert (tmp_path / "w.ctm").read_text().startswith("one 1 ")
    assert main(["transcribe", str(exp), "--list", str(lst), "-o", str(tmp_path / "t"),
                 "--vad", "none", "--device", "cpu"]) == 0
    assert (tmp_path / "t").read_text().splitlines()[0] == f"one {truth['one'][0]}"
    # bad experiment or no audio: exit 2 with a message
    assert main(["transcribe", str(tmp_path / "nope"), str(audio / "one.wav")]) == 2
    assert main(["transcribe", str(exp)]) == 2
    assert "no audio" in capsys.readouterr().err


def test_api_raises_by_default_and_continues_on_request(asr, tmp_path):
    y, letters, _ = _utterance(5)
    sf.write(tmp_path / "ok.wav", y, SR)
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioError, match="missing.wav"):
        asr.transcribe([missing, tmp_path / "ok.wav"])
    res = asr.transcribe([missing, tmp_path / "ok.wav"], on_error="continue")
    assert res[0].error and "missing.wav" in res[0].error and res[0].text == ""
    assert res[1].error is None and res[1].text == " ".join(letters)


def test_inputs_and_ids(tmp_path):
    assert utterance_ids(["a/x.wav", "b/x.flac", "c/my file.wav", "y.wav"]) == [
        "a_x", "b_x", "my_file", "y"]
    assert utterance_ids(["d/x.wav", "d/x.flac"]) == ["d_x", "d_x-2"]
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("d/b.WAV", "d/e/a.flac", "d/c.txt"):
        (tmp_path / name).write_bytes(b"")
    assert expand_inputs([tmp_path / "d"]) == [tmp_path / "d/b.WAV", tmp_path / "d/e/a.flac"]
    with pytest.raises(FileNotFoundError, match="list file"):
        expand_inputs([f"@{tmp_path / 'none.txt'}"])


def _long_recording(seed: int, seconds: float):
    """Utterances of tone letters separated by 0.5-1.5 s of quiet, ``seconds`` long."""
    rng = np.random.default_rng(seed)
    parts, truth, t = [], [], 0.0
    while t < seconds:
        letters = list(rng.choice(list(LETTERS), size=int(rng.integers(2, 5))))
        y, spans = synth_speech(letters, rng, lead=float(rng.uniform(0.5, 1.5)))
        truth += [(str(c), t + s, t + e) for c, s, e in spans]
        parts.append(y)
        t += y.size / SR
    return np.concatenate(parts), truth


def test_long_recording_is_cut_into_capped_segments_read_in_blocks(asr, tmp_path, monkeypatch):
    y, truth = _long_recording(7, 200.0)
    path = tmp_path / "long.wav"
    sf.write(path, y, SR)
    reads = []
    orig = AudioFile._read

    def spy(self, start, n):
        reads.append(n)
        return orig(self, start, n)

    monkeypatch.setattr(AudioFile, "_read", spy)
    asr2 = Transcriber(asr.backend, vad="none", max_segment=20, block_seconds=10,
                       batch_seconds=45)
    r = asr2.transcribe(path)[0]
    assert r.duration == pytest.approx(y.size / SR)
    assert len(r.segments) >= 10 and max(s.duration for s in r.segments) <= 20 + 1e-6
    assert r.segments[0].start == 0 and r.segments[-1].end == pytest.approx(r.duration)
    assert max(reads) <= 20 * SR + 1  # never the whole file: a block or a segment at a time
    _check_times(r.words, r.duration)
    _match_truth(r.words, truth)  # every word, its time offset by its segment's start


def test_cap_regions_cuts_at_the_quietest_point():
    sr = 8000
    x = np.full(40 * sr, 0.5, np.float32)
    x[round(13.0 * sr):round(13.3 * sr)] = 0.0  # one pause in a 40 s "speech" region
    x[round(27.0 * sr):round(27.2 * sr)] = 0.01
    audio = AudioArray(x, sr)
    segs = list(cap_regions(audio, [AudioSegment(1.0, 39.0)], 20.0, block_seconds=3.0))
    assert len(segs) == 3 and segs[0].start == 1.0
    assert 13.0 <= segs[1].start <= 13.3 and 27.0 <= segs[2].start <= 27.2  # in the pauses
    assert all(a.end == b.start for a, b in itertools.pairwise(segs))
    assert segs[-1].end == 39.0 and all(s.duration <= 20.0 for s in segs)
    assert list(cap_regions(audio, [AudioSegment(0, 5)], 20.0)) == [AudioSegment(0, 5)]
    with pytest.raises(ValueError, match="max_segment"):
        list(cap_regions(audio, [], 0.5))


def _vowel_recording():
    rng = np.random.default_rng(0)
    parts, truth, t = [np.zeros(2 * SR, np.float32)], [], 2.0
    for _ in range(4):
        v = vowel_speech("".join(rng.choice(list("aeiou"), size=8)))
        truth.append((t, t + v.size / SR))
        parts += [v, np.zeros(4 * SR, np.float32)]
        t += v.size / SR + 4
    x = np.concatenate(parts)
    return x + rng.normal(scale=0.002, size=x.size).astype(np.float32), truth


def test_silero_vad_finds_the_speech_and_only_it():
    x, truth = _vowel_recording()
    threads = torch.get_num_threads()
    regions = list(speech_regions(AudioArray(x, SR), block_seconds=3.0))
    assert torch.get_num_threads() == threads
    assert len(regions) == len(truth)
    for r, (s, e) in zip(regions, truth):
        assert r.start <= s + 0.1 and r.end >= e - 0.1  # covers the vowels
        assert r.start >= s - 0.5 and r.end <= e + 0.6  # and not the silence around them
    x8 = AF.resample(torch.from_numpy(x), SR, 8000).numpy()
    assert len(list(speech_regions(AudioArray(x8, 8000)))) == len(truth)
    assert list(speech_regions(AudioArray(np.zeros(5 * SR, np.float32), SR))) == []


def test_transcriber_segments_long_files_with_the_vad(asr):
    x, truth = _vowel_recording()
    vad = Transcriber(asr.backend, vad="silero", max_segment=5)
    r = vad.transcribe(x, sample_rate=SR)[0]
    assert len(r.segments) == len(truth)  # the VAD's regions, each under 5 s
    assert all(s.duration <= 5 for s in r.segments)
    _check_times(r.words, r.duration)
    short = vad.transcribe(x[:4 * SR], sample_rate=SR)[0]  # not longer than max_segment:
    assert short.segments == [AudioSegment(0.0, 4.0)]  # decoded whole, no VAD


@pytest.fixture(scope="module")
def gmm(tmp_path_factory):
    return train_tiny_audio_gmm(tmp_path_factory.mktemp("gmm"))


def test_hmm_gmm_stages_transcribe_with_word_times(gmm, tmp_path, capsys):
    y, letters, spans = _utterance(7)
    mono = Transcriber.from_exp(gmm["mono"])  # graph: mono/graph; features: MFCC of data.train
    r = mono.transcribe(y, sample_rate=SR)[0]
    assert r.text == " ".join(letters)
    _match_truth(r.words, spans, tol=0.1)
    assert all(w.conf is None for w in r.words)
    long, truth = _long_recording(8, 70.0)
    rl = Transcriber.from_exp(gmm["mono"], vad="none", max_segment=25).transcribe(
        long, sample_rate=SR)[0]
    assert len(rl.segments) >= 3
    _check_times(rl.words, rl.duration)
    _match_truth(rl.words, truth, tol=0.15)
    # the LDA+MLLT stage through the CLI (spliced, transformed features)
    sf.write(tmp_path / "u.wav", y, SR)
    assert main(["transcribe", str(gmm["tri2"]), str(tmp_path / "u.wav"),
                 "--graph", str(gmm["tri2"] / "graph"), "--ctm", str(tmp_path / "c")]) == 0
    hyp = capsys.readouterr().out.split()
    assert hyp[0] == "u"
    assert len((tmp_path / "c").read_text().splitlines()) == len(hyp) - 1


def test_long_audio_benchmark_script(exp, tmp_path):
    data = make_audio_data_dir(tmp_path / "test", n_utts=6, seed=3)
    out = tmp_path / "res.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench" / "long_audio.py"), "--exp", str(exp),
         "--data", str(data), "--lengths", "8,25", "--vad", "none", "--max-segment", "10",
         "--work-dir", str(tmp_path / "work"), "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    rows = res["lengths"]
    # each recording stops at the last whole utterance that fits (up to one utterance short)
    longest = max(sf.info(str(w)).duration for w in (data / "wav").iterdir())
    for r, want in zip(rows, (8.0, 25.0)):
        assert want - longest <= r["audio_seconds"] <= want
    for r in rows:
        assert r["long_form_wer"] <= r["per_utterance_wer"] + 10
        assert r["peak_rss_mb"] > 50 and r["rtf"] > 0 and r["max_segment_seconds"] <= 10
        assert r["utterances"] >= 1
    assert rows[1]["utterances"] > len(list((data / "wav").iterdir()))  # repeated to fill
    assert sf.info(tmp_path / "work" / "long_25.wav").duration == pytest.approx(
        rows[1]["audio_seconds"], abs=0.01)
    assert f"| {rows[1]['audio_seconds']:.0f} s |" in proc.stdout


def test_beam_and_wfst_searches_give_words_with_times(exp, tmp_path):
    y, letters, spans = _utterance(9)
    beam = Transcriber.from_exp(exp, method="ctc_prefix_beam", beam=4, device="cpu")
    r = beam.transcribe(y, sample_rate=SR)[0]
    assert r.text == " ".join(letters)
    _match_truth(r.words, spans)
    text = tmp_path / "lm.txt"
    text.write_text("".join(f"u{i} {' '.join(LETTERS)}\nv{i} A C E B D\n" for i in range(3)))
    lm = tmp_path / "lm.arpa"
    assert main(["train-lm", "ngram", str(text), str(lm), "--order", "2"]) == 0
    assert main(["mkgraph", "--ctc", str(exp), str(lm), str(tmp_path / "tlg")]) == 0
    wfst = Transcriber.from_exp(exp, method="wfst", graph=tmp_path / "tlg", lm_weight=0.3,
                                device="cpu")
    r = wfst.transcribe(y, sample_rate=SR)[0]
    assert r.text == " ".join(letters)
    _match_truth(r.words, spans)
    with pytest.raises(ValueError, match="attention decoder"):
        Transcriber.from_exp(exp, method="attention_beam", device="cpu")
    with pytest.raises(ValueError, match="graph"):
        Transcriber.from_exp(exp, method="wfst", device="cpu")


def test_with_context_splits_pauses_at_their_middle():
    """VAD regions get up to ``context`` seconds of their surroundings, never past the middle
    of the pause to the neighbour, never outside the recording, never overlapping."""
    from asrkit.data.segment import AudioSegment, with_context

    regions = [AudioSegment(0.2, 1.0), AudioSegment(1.4, 2.0), AudioSegment(5.0, 6.0),
               AudioSegment(9.8, 9.9)]
    out = list(with_context(iter(regions), duration=10.0, context=0.5))
    assert [(round(s.start, 3), round(s.end, 3)) for s in out] == [
        (0.0, 1.2), (1.2, 2.5), (4.5, 6.5), (9.3, 10.0)]
    assert list(with_context(iter([]), duration=3.0, context=0.5)) == []
    assert [(s.start, s.end) for s in with_context(iter(regions[:1]), 10.0, 0.0)] == [(0.2, 1.0)]
