#!/usr/bin/env bash
# AN4 recipe (CMU census database, 948 train / 130 test utterances, 16 kHz): the corpus's data
# preparation, lang dir and LM; every stage comes from the shared ../TEMPLATE/asr.sh (stages
# 0 prep, 1 features, 2 lang/LM/tokenizer, 3 train, 4 decode, 5 score; `--help` lists them).
#
#   recipes/an4/run.sh --an4-dir /path/to/an4                          # neural (quick config)
#   recipes/an4/run.sh --conf recipes/an4/conf/train_full.yaml -- model=hmm_gmm   # HMM-GMM
#
# data/{train,dev,test}: asrkit prep an4 (dev = about 100 train utterances of held-out
# speakers); data/lang from etc/an4.dic with the phones of etc/an4.phone; LMs: kn3 (the
# template's Kneser-Ney trigram of data/train/text) and an4 (etc/an4.lm, the corpus's own LM).
set -euo pipefail
recipe_dir=$(cd "$(dirname "$0")" && pwd)
recipe_name=an4
an4_dir=${AN4_DIR:-}
conf=$recipe_dir/conf/train_quick.yaml
vocab_size=150       # BPE: at 150 pieces AN4's words are whole pieces
gmm_lms="kn3 an4"
recipe_opts=("an4-dir:an4_dir")
recipe_usage="  --an4-dir DIR     AN4 corpus root (holds etc/ and wav/); default: \$AN4_DIR
                    (conf/train_full.yaml and conf/full/<model>.yaml: the best sizes)"

need_an4() {
  if [ -z "$an4_dir" ] || [ ! -f "$an4_dir/etc/$1" ]; then
    echo "$0: AN4 corpus not found: pass --an4-dir DIR or set AN4_DIR to the folder that holds" \
         "etc/$1 and wav/ (got '${an4_dir}')" >&2
    exit 1
  fi
}

recipe_prep() {
  need_an4 an4_train.fileids
  asrkit prep an4 "$an4_dir" data
}

recipe_lang() {
  need_an4 an4.dic
  asrkit lang "$an4_dir/etc/an4.dic" data/lang --format cmu --phones "$an4_dir/etc/an4.phone" \
    --text data/train/text --text data/test/text
}

recipe_lm() {
  case $1 in
    an4) need_an4 an4.lm; cp "$an4_dir/etc/an4.lm" data/lm/an4.arpa ;;
    *) echo "$0: unknown LM '$1' (an4 or kn3)" >&2; exit 1 ;;
  esac
}

[ -z "$an4_dir" ] || [ ! -d "$an4_dir" ] || an4_dir=$(cd "$an4_dir" && pwd)
source "$recipe_dir/../TEMPLATE/asr.sh"
asr_main "$@"
