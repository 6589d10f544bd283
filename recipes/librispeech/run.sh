#!/usr/bin/env bash
# LibriSpeech recipe (OpenSLR 12: 960 h of read English) for GPUs: the corpus's data preparation,
# lexicon and LMs; every stage comes from the shared ../TEMPLATE/asr.sh (0 prep, 1 features,
# 2 lang/LM/tokenizer, 3 train, 4 decode, 5 score; `--help` lists them). It shares everything
# with recipes/mini_librispeech but its data and configs.
#
#   recipes/librispeech/run.sh --data-dir /data/librispeech --download \
#       --launcher "torchrun --nproc_per_node=4"              # train-clean-100, 4 GPUs
#   recipes/librispeech/run.sh --data-dir DIR --train-parts 960 --conf conf/conformer_960h.yaml
#
# data: DIR/LibriSpeech/<part> (with --download: fetched from OpenSLR, or --base-url, resumable,
# SHA-256 checked, then unpacked); data/train = the training parts combined; dev_clean tunes
# the decoding settings; dev_other, test_clean and test_other are decoded at them.
# lang/LM: librispeech-lexicon.txt and the pruned 3-gram "tgsmall" (3-gram.pruned.3e-7) of
# OpenSLR 11 (fetched by --download into data/local/lm); its 4-gram "fglarge" (or 3-gram
# "tglarge") rescores the n-best lists (--rescore-lms). Units: BPE 5000.
set -euo pipefail
recipe_dir=$(cd "$(dirname "$0")" && pwd)
recipe_name=librispeech
data_dir= download=false base_url= lm_base_url= checksums= train_parts=100
conf=$recipe_dir/conf/conformer_100h.yaml
vocab_size=5000 gmm_lms=tgsmall ctc_lms=tgsmall lm_weights="0.3 0.5 0.7 1.0" rescore_lms=fglarge
dev_set=dev_clean test_sets="dev_other test_clean test_other"
recipe_opts=("data-dir:data_dir" "base-url:base_url" "lm-base-url:lm_base_url"
             "checksums:checksums" "train-parts:train_parts")
recipe_flags=("download:download")
recipe_usage="  --data-dir DIR    folder holding (or receiving) LibriSpeech/<part>
  --download        fetch the parts and OpenSLR 11's lexicon and LM first (resumable)
  --base-url URL    mirror of the part archives (<URL>/<part>.tar.gz, file:// allowed)
  --lm-base-url URL mirror of OpenSLR 11 (<URL>/librispeech-lexicon.txt ...)
  --checksums FILE  sha256sum lines for the archives/LM files of a mirror
  --train-parts P   100 (train-clean-100, default) or 960 (all three training parts)"

parts() {
  case $train_parts in
    100) echo train-clean-100 ;;
    960) echo train-clean-100 train-clean-360 train-other-500 ;;
    *) echo "$0: --train-parts must be 100 or 960 (got '$train_parts')" >&2; exit 1 ;;
  esac
}

recipe_prep() {
  local p all dirs=()
  [ -n "$data_dir" ] || { echo "$0: pass --data-dir DIR (add --download to fetch)" >&2; exit 1; }
  [ ! -f data/train/text ] || return 0
  all="$(parts) dev-clean dev-other test-clean test-other"
  if [ "$download" = true ]; then
    asrkit prep librispeech "$data_dir" data --parts "$(tr ' ' , <<< "$all")" \
      --download "$data_dir" ${base_url:+--base-url "$base_url"} ${checksums:+--checksums "$checksums"}
  else
    asrkit prep librispeech "$data_dir" data --parts "$(tr ' ' , <<< "$all")"
  fi
  for p in $(parts); do dirs+=("data/${p//-/_}"); done
  asrkit combine data/train "${dirs[@]}"
}

recipe_lang() {
  [ ! -f data/lang/words.txt ] || return 0
  [ "$download" != true ] || asrkit prep librispeech-lm data/local/lm \
    ${lm_base_url:+--base-url "$lm_base_url"} ${checksums:+--checksums "$checksums"}
  asrkit lang data/local/lm/librispeech-lexicon.txt data/lang --format librispeech \
    --text "data/$dev_set/text"
}

recipe_lm() {  # OpenSLR 11's LMs by Kaldi's names
  local f
  case $1 in tgsmall) f=3-gram.pruned.3e-7 ;; tglarge) f=3-gram ;; fglarge) f=4-gram ;;
    *) echo "$0: unknown LM '$1' (tgsmall, tglarge, fglarge or kn3)" >&2; exit 1 ;; esac
  recipe_lang
  [ -f "data/local/lm/$f.arpa.gz" ] || [ "$download" != true ] || asrkit prep librispeech-lm \
    data/local/lm --files "$f.arpa.gz" ${lm_base_url:+--base-url "$lm_base_url"} ${checksums:+--checksums "$checksums"}
  gzip -dc "data/local/lm/$f.arpa.gz" > "data/lm/$1.arpa.tmp"
  mv "data/lm/$1.arpa.tmp" "data/lm/$1.arpa"
}

source "$recipe_dir/../TEMPLATE/asr.sh"
asr_main "$@"
