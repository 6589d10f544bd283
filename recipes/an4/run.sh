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
# HMM-GMM path (choose it with `-- model=hmm_gmm`; Kaldi's train_mono.sh -> train_deltas.sh):
#   stage 1  features   asrkit features --type mfcc  -> dump/mfcc/{train,dev,test}
#   stage 2  lang, LMs  asrkit lang (etc/an4.dic)    -> data/lang; asrkit train-lm ngram ->
#                       data/lm/train_kn3.arpa; etc/an4.lm is the corpus's own LM
#   stage 3  train      asrkit train model=hmm_gmm   -> exp/<tag>/{mono,tri1} (+ ali/)
#   stage 4  mkgraph, decode: for each stage and LM, HCLG in exp/<tag>/<stage>/graph_<lm>;
#                       dev decoded at each --acwt value, test at the one best on dev
#   stage 5  score      -> decode_{dev,test}_graph_<lm>[_acwt<x>]/score.txt
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
  --acwt "A B ..."  HMM-GMM: acoustic scales tried on dev; test uses the best (default
                    "0.067 0.083 0.1 0.125", i.e. LM weights 15, 12, 10, 8)
  --gmm-lms "L ..." HMM-GMM: LMs to build graphs with: an4 (etc/an4.lm) and/or kn3 (3-gram
                    Kneser-Ney from data/train/text) (default "kn3 an4")
  -- KEY=VALUE ...  extra Hydra overrides for the train stage (e.g. trainer.max_epochs=5;
                    model=hmm_gmm runs the HMM-GMM path)
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
acwts="0.067 0.083 0.1 0.125"
gmm_lms="kn3 an4"
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
    --acwt) acwts=$2; shift 2 ;;
    --gmm-lms) gmm_lms=$2; shift 2 ;;
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

gmm=false
for o in ${overrides[@]+"${overrides[@]}"}; do [ "$o" != "model=hmm_gmm" ] || gmm=true; done
if $gmm && [ "$tag" = "$(basename "$conf" .yaml)" ]; then tag=${tag}_hmm_gmm; exp=exp/$tag; fi

if run_stage 0; then
  if [ -z "$an4_dir" ] || [ ! -f "$an4_dir/etc/an4_train.fileids" ]; then
    echo "$0: AN4 corpus not found: pass --an4-dir DIR or set AN4_DIR to the folder that holds" \
         "etc/an4_train.fileids and wav/ (got '${an4_dir}')" >&2
    exit 1
  fi
  log 0 "data prep from $an4_dir"
  asrkit prep an4 "$an4_dir" data
fi

if $gmm; then
  if run_stage 1; then
    for part in train dev test; do
      log 1 "MFCC features for $part"
      asrkit features data/$part dump/mfcc/$part --type mfcc --nj "$nj"
    done
  fi
  if run_stage 2; then
    if [ -z "$an4_dir" ] || [ ! -f "$an4_dir/etc/an4.dic" ]; then
      echo "$0: stage 2 needs the AN4 dictionary: pass --an4-dir DIR or set AN4_DIR" >&2
      exit 1
    fi
    log 2 "lang dir from etc/an4.dic; LMs"
    asrkit lang "$an4_dir/etc/an4.dic" data/lang --format cmu --phones "$an4_dir/etc/an4.phone" \
      --text data/train/text --text data/test/text
    mkdir -p data/lm
    cp "$an4_dir/etc/an4.lm" data/lm/an4.arpa
    asrkit train-lm ngram data/train/text data/lm/kn3.arpa --order 3 --dev data/dev/text
  fi
  if run_stage 3; then
    log 3 "training $exp (HMM-GMM) with $conf"
    asrkit train conf="$conf" exp_dir="$exp" data.train=dump/mfcc/train data.lang=data/lang \
      ${overrides[@]+"${overrides[@]}"}
  fi
  stages=$(ls -d "$exp"/*/ 2>/dev/null | xargs -n1 basename | sort || true)
  wer() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['wer']['rate'])" "$1"; }
  for st in $stages; do
    [ -f "$exp/$st/.done" ] || continue
    for lm in $gmm_lms; do
      graph=$exp/$st/graph_$lm
      if run_stage 4; then
        if [ ! -f "$graph/HCLG.fst" ] || [ "$exp/$st/final.mdl" -nt "$graph/HCLG.fst" ]; then
          log 4 "mkgraph $graph"
          asrkit mkgraph data/lang data/lm/$lm.arpa "$exp/$st" "$graph"
        fi
      fi
      if run_stage 4 || run_stage 5; then
        best=; best_wer=
        for a in $acwts; do
          dir=$exp/$st/decode_dev_graph_${lm}_acwt$a
          if run_stage 4 && { [ ! -f "$dir/text" ] || [ "$graph/HCLG.fst" -nt "$dir/text" ]; }; then
            log 4 "decoding dev with $st, LM $lm, acwt $a"
            asrkit decode "$exp/$st" dump/mfcc/dev --graph "$graph" --acwt "$a" --nj "$nj" \
              --out "$dir"
          fi
          [ -f "$dir/text" ] || continue
          if [ ! -f "$dir/score.json" ] || [ "$dir/text" -nt "$dir/score.json" ]; then
            asrkit score data/dev/text "$dir/text" --name "dev_${st}_${lm}_acwt$a" > /dev/null
          fi
          w=$(wer "$dir/score.json")
          if [ -z "$best" ] || python3 -c "import sys; sys.exit(not float(sys.argv[1]) < float(sys.argv[2]))" "$w" "$best_wer"; then
            best=$a; best_wer=$w
          fi
        done
        [ -n "$best" ] || continue
        dir=$exp/$st/decode_test_graph_${lm}
        if run_stage 4 && { [ ! -f "$dir/text" ] || [ "$graph/HCLG.fst" -nt "$dir/text" ] \
            || [ "$(cat "$dir/acwt" 2>/dev/null)" != "$best" ]; }; then
          log 4 "decoding test with $st, LM $lm, acwt $best (dev WER $best_wer%)"
          asrkit decode "$exp/$st" dump/mfcc/test --graph "$graph" --acwt "$best" --nj "$nj" \
            --out "$dir"
          echo "$best" > "$dir/acwt"
        fi
        if run_stage 5 && [ -f "$dir/text" ]; then
          if [ ! -f "$dir/score.txt" ] || [ "$dir/text" -nt "$dir/score.txt" ]; then
            asrkit score data/test/text "$dir/text" --name "test_${st}_${lm}" > /dev/null
          fi
          echo "== $tag/$st LM $lm: dev WER $best_wer% at acwt $best; test ==" ; sed -n 3,5p "$dir/score.txt"
        fi
      fi
    done
  done
  exit 0
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
