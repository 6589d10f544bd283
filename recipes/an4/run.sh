#!/usr/bin/env bash
# AN4 recipe (CMU census database, 948 train / 130 test utterances, 16 kHz).
#
#   stage 0  prep       asrkit prep an4      -> data/{train,dev,test}
#   stage 1  features   asrkit features      -> dump/fbank/{train[_sp],dev,test} (+ global CMVN)
#   stage 2  tokenizer  asrkit tokenizer     -> data/token/<type>_<vocab>.model
#   stage 3  train      asrkit train conf=…  -> exp/<tag>
#   stage 4  decode     asrkit decode        -> exp/<tag>/decode_{dev,test}_ctc_greedy/text
#   stage 5  score      asrkit score         -> score.txt, per_utt, exp/<tag>/RESULTS.md
#
# Each stage skips when its outputs are complete, so a killed run resumes where it stopped.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: $0 [options] [-- KEY=VALUE ...]
  --an4-dir DIR     AN4 corpus root (holds etc/ and wav/); default: \$AN4_DIR
  --stage N         first stage to run (default 0)
  --stop-stage N    last stage to run (default 5)
  --conf FILE       training config (default conf/train_quick.yaml; conf/train_full.yaml for
                    the best result)
  --tag NAME        experiment name under exp/ (default: the config file's name)
  --work-dir DIR    where data/ dump/ exp/ are written (default: this recipe's directory)
  --nj N            parallel jobs for feature extraction (default 2)
  --avg N           average the last N epoch checkpoints for decoding (default 1)
  --decode-method M ctc_greedy (default), ctc_prefix_beam, attention_beam or
                    joint_ctc_attention (the last two need a model trained with a decoder)
  --beam N          beam size of the beam methods (default 10)
  --ctc-weight W    CTC weight of joint_ctc_attention decoding (default 0.3)
  --token-type T    sentencepiece units: bpe (default; at 150 AN4 words are whole pieces),
                    char or unigram
  --vocab-size N    tokenizer vocabulary (default 150; an upper bound for char)
  --speed-perturb F speed perturbation factors for train, e.g. 0.9,1.0,1.1 (default: none)
  -- KEY=VALUE ...  extra Hydra overrides for the train stage (e.g. trainer.max_epochs=5)
USAGE
}

recipe_dir=$(cd "$(dirname "$0")" && pwd)
an4_dir=${AN4_DIR:-}
stage=0
stop_stage=5
conf=$recipe_dir/conf/train_quick.yaml
tag=
work_dir=$recipe_dir
nj=2
avg=1
method=ctc_greedy
beam=10
ctc_weight=0.3
vocab_size=150
token_type=bpe
speed_perturb=
overrides=()
while [ $# -gt 0 ]; do
  case $1 in
    --an4-dir) an4_dir=$2; shift 2 ;;
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --conf) conf=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --work-dir) work_dir=$2; shift 2 ;;
    --nj) nj=$2; shift 2 ;;
    --avg) avg=$2; shift 2 ;;
    --decode-method) method=$2; shift 2 ;;
    --beam) beam=$2; shift 2 ;;
    --ctc-weight) ctc_weight=$2; shift 2 ;;
    --vocab-size) vocab_size=$2; shift 2 ;;
    --token-type) token_type=$2; shift 2 ;;
    --speed-perturb) speed_perturb=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; overrides=("$@"); break ;;
    *) echo "$0: unknown option $1" >&2; usage >&2; exit 1 ;;
  esac
done
[ -n "$tag" ] || tag=$(basename "$conf" .yaml)
mkdir -p "$work_dir"
cd "$work_dir"
exp=exp/$tag
token=data/token/${token_type}_${vocab_size}
train_set=train
[ -z "$speed_perturb" ] || train_set=train_sp

log() { echo "$(date '+%H:%M:%S') [an4 stage $1] $2" >&2; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

if run_stage 0; then
  if [ -z "$an4_dir" ] || [ ! -f "$an4_dir/etc/an4_train.fileids" ]; then
    echo "$0: AN4 corpus not found: pass --an4-dir DIR or set AN4_DIR to the folder that holds" \
         "etc/an4_train.fileids and wav/ (got '${an4_dir}')" >&2
    exit 1
  fi
  log 0 "data prep from $an4_dir"
  asrkit prep an4 "$an4_dir" data
fi

if run_stage 1; then
  for part in dev test; do
    log 1 "fbank features for $part"
    asrkit features data/$part dump/fbank/$part --type fbank --nj "$nj"
  done
  log 1 "fbank features for train${speed_perturb:+ with speed perturbation $speed_perturb}"
  asrkit features data/train dump/fbank/$train_set --type fbank --nj "$nj" \
    ${speed_perturb:+--speed-perturb "$speed_perturb"}
fi

if run_stage 2; then
  if [ ! -f $token.model ]; then
    log 2 "$token_type tokenizer ($vocab_size)"
    asrkit tokenizer data/train/text $token --model-type "$token_type" --vocab-size "$vocab_size"
  fi
fi

if run_stage 3; then
  log 3 "training $exp with $conf"
  asrkit train conf="$conf" exp_dir="$exp" data.train=dump/fbank/$train_set data.dev=dump/fbank/dev \
    data.tokenizer=$token.model ${overrides[@]+"${overrides[@]}"}
fi

if run_stage 4; then
  for part in dev test; do
    dir=$exp/decode_${part}_${method}
    if [ ! -f "$dir/text" ] || [ "$exp/checkpoints/last.pt" -nt "$dir/text" ]; then
      log 4 "decoding $part ($method)"
      asrkit decode "$exp" dump/fbank/$part --avg "$avg" --method "$method" --beam "$beam" \
        --ctc-weight "$ctc_weight"
    fi
  done
fi

if run_stage 5; then
  for part in dev test; do
    dir=$exp/decode_${part}_${method}
    if [ ! -f "$dir/score.txt" ] || [ "$dir/text" -nt "$dir/score.txt" ]; then
      log 5 "scoring $part"
      asrkit score data/$part/text "$dir/text" --name "${part}_${method}" > /dev/null
    fi
    echo "== $tag: $part ==" ; cat "$dir/score.txt"
  done
fi
