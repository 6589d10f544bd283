#!/usr/bin/env bash
# Mini LibriSpeech recipe (train-clean-5: 1,519 utterances, 5.3 h, 28 speakers; OpenSLR 31):
# data prep, CMU-dictionary lexicon and book LMs; all stages from ../TEMPLATE/asr.sh (`--help`).
# Systems: the HMM-GMM ladder (conf/gmm.yaml) and a Conformer-CTC (conf/conformer.yaml).
#   recipes/mini_librispeech/run.sh --data-dir DIR --books-dir BOOKS --work-dir WORK
# Without dev-clean-2 the speakers are split (dev 1970, 3664; test 3242, 4680, 6272, 6848);
# with it, dev and test are dev-clean-2 (Kaldi's egs/mini_librispeech). lang: CMUdict, the
# --vocab-words most frequent LM-text words plus training words (--g2p for the rest). LMs over
# transcripts + books (dev/test speakers' books left out): tg, tgsmall (pruned, graphs), and
# for rescoring tglarge/fglarge over --big-lm-words and "gpt" (--gpt-opts).
set -euo pipefail
recipe_dir=$(cd "$(dirname "$0")" && pwd)
recipe_name=mini_librispeech
data_dir= books_dir= lm_words=5000000 vocab_words=20000 big_lm_words=50000000 g2p=
dev_speakers=1970,3664 test_speakers=3242,4680,6272,6848
conf="$recipe_dir/conf/gmm.yaml $recipe_dir/conf/conformer.yaml"
vocab_size=300 gmm_lms=tgsmall ctc_lms=tgsmall lm_weights="0.3 0.5 0.8 1.0" prune=1e-6 rescore_lms=fglarge
recipe_opts=("data-dir:data_dir" "books-dir:books_dir" "lm-words:lm_words" "vocab-words:vocab_words"
  "dev-speakers:dev_speakers" "test-speakers:test_speakers" "prune:prune" "big-lm-words:big_lm_words")
recipe_flags=("g2p:g2p")
recipe_usage="  --data-dir DIR    folder holding LibriSpeech/train-clean-5 (and maybe dev-clean-2)
  --books-dir DIR   Project Gutenberg books (.txt) for the LM text (no books: transcripts only)
  --lm-words N      words of book text in the LM (default $lm_words)
  --vocab-words N   lexicon size from the LM text's most frequent words (default $vocab_words)
  --dev-speakers L / --test-speakers L  the split without dev-clean-2 ($dev_speakers / $test_speakers)
  --prune T         Stolcke pruning threshold of tg -> tgsmall, the first-pass LM (default $prune)
  --big-lm-words N  words of book text in the rescoring LMs tglarge/fglarge (default $big_lm_words)
  --g2p             train a G2P on CMUdict (asrkit g2p) and pronounce the lexicon's words
                    CMUdict lacks (training words included: no <UNK> in training)"

recipe_prep() {
  local ls=${data_dir%/}/LibriSpeech
  [ -d "$ls/train-clean-5" ] || { echo "$0: --data-dir must hold LibriSpeech/train-clean-5" \
    "(got '$data_dir'); see ../shared/corpora/README.md or OpenSLR 31" >&2; exit 1; }
  [ ! -f data/test/text ] || return 0
  if [ -d "$ls/dev-clean-2" ]; then
    asrkit prep librispeech "$ls" data --parts train-clean-5,dev-clean-2
    asrkit prep kaldi data/train_clean_5 data/train
    asrkit prep kaldi data/dev_clean_2 data/dev
    asrkit prep kaldi data/dev_clean_2 data/test
  else
    asrkit prep librispeech "$ls" data --parts train-clean-5
    asrkit subset data/train_clean_5 data/train --speakers "$dev_speakers,$test_speakers" --exclude
    asrkit subset data/train_clean_5 data/dev --speakers "$dev_speakers"
    asrkit subset data/train_clean_5 data/test --speakers "$test_speakers"
  fi
}

lm_text() {  # $1 (data/local/lm_text.txt): training transcripts + $2 words of book sentences
  local out=$1 words=$2 books=${1%.txt}_books.txt
  [ ! -f "$out" ] || return 0
  mkdir -p data/local
  cut -d' ' -f2- data/train/text > "$out.tmp"
  if [ -n "$books_dir" ]; then
    asrkit lm-text "$books_dir" "$books" --max-words "$words" \
      --chapters "$data_dir/LibriSpeech/CHAPTERS.TXT" \
      --exclude-readers "$(cut -d' ' -f1 data/dev/spk2utt data/test/spk2utt | paste -sd,)" \
      --exclude-transcripts data/dev data/test
    asrkit lm-leaks "$books" data/dev data/test  # dev/test sentences, 10-word runs: 0 expected
    cat "$books" >> "$out.tmp"
  fi
  mv "$out.tmp" "$out"
}

recipe_lang() {
  [ ! -f data/lang/words.txt ] || return 0
  lm_text data/local/lm_text.txt "$lm_words"
  [ -z "$g2p" ] || [ -f data/local/g2p/g2p.json ] || asrkit g2p train cmudict data/local/g2p --strip-stress
  asrkit lang cmudict data/lang --strip-stress --vocab-text data/local/lm_text.txt \
    --vocab-size "$vocab_words" --keep-text data/train/text --text data/dev/text \
    --text data/test/text ${g2p:+--g2p data/local/g2p}
}

recipe_lm() {  # tg: the full trigram; tgsmall: tg pruned (Stolcke) for first-pass graphs
  case $1 in
    tg) recipe_lang
        cut -d' ' -f2- data/dev/text > data/local/dev_sentences.txt  # --dev in the same format
        asrkit train-lm ngram data/local/lm_text.txt data/lm/tg.arpa --order 3 --no-utt-ids \
          --vocab data/lang/words.txt --dev data/local/dev_sentences.txt ;;
    tgsmall) make_lm tg
        asrkit train-lm prune data/lm/tg.arpa data/lm/tgsmall.arpa --threshold "$prune" \
          --dev data/dev/text ;;
    tglarge|fglarge) recipe_lang
        lm_text data/local/lm_text_big.txt "$big_lm_words"
        asrkit train-lm ngram data/local/lm_text_big.txt "data/lm/$1.arpa" --large --no-utt-ids \
          --order "$([ "$1" = tglarge ] && echo 3 || echo 4)" --vocab data/lang/words.txt \
          --tmp-dir data/local --dev data/dev/text ;;
    *) echo "$0: unknown LM '$1' (tg, tgsmall, tglarge, fglarge or kn3)" >&2; exit 1 ;;
  esac
}

recipe_gpt_text() {  # --rescore-lms gpt: the GPT's text, that of the big rescoring LMs
  recipe_lang > /dev/null
  lm_text data/local/lm_text_big.txt "$big_lm_words" > /dev/null
  echo data/local/lm_text_big.txt
}

source "$recipe_dir/../TEMPLATE/asr.sh"
asr_main "$@"
