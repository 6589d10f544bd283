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
  --gmm-decode "S ..." HMM-GMM: stages to build graphs for and decode (default: every trained
                    stage, e.g. "mono tri1 tri2")
  --ctc-lms "L ..." neural CTC models: also decode over a TLG graph of each LM (an4, kn3), the
                    LM weight chosen on dev from --lm-weights (default: none, greedy only)
  --lm-weights "W ..." LM weights tried on dev for --ctc-lms (default "0.2 0.3 0.5 0.8")
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
ctc_lms=
gmm_decode=
lm_weights="0.2 0.3 0.5 0.8"
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
    --ctc-lms) ctc_lms=$2; shift 2 ;;
    --gmm-decode) gmm_decode=$2; shift 2 ;;
    --lm-weights) lm_weights=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; overrides=("$@"); break ;;
    *) echo "$0: unknown option $1" >&2; usage >&2; exit 1 ;;
  esac
done
[ -n "$tag" ] || tag=$(basename "$conf" .yaml)
[ -z "$an4_dir" ] || [ ! -d "$an4_dir" ] || an4_dir=$(cd "$an4_dir" && pwd)
mkdir -p "$work_dir"
cd "$work_dir"
exp=exp/$tag
token=data/token/${token_type}_${vocab_size}
train_set=train
[ -z "$speed_perturb" ] || train_set=train_sp

log() { echo "$(date '+%H:%M:%S') [an4 stage $1] $2" >&2; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
# stale OUT DEP...: OUT is missing or older than one of the DEPs
stale() { local out=$1 f; shift; [ -f "$out" ] || return 0
  for f; do [ "$f" -nt "$out" ] && return 0; done; return 1; }

# tune_then_test MODEL GRAPH_FILE FEATS OPT "VALUES" NAME MODEL_FILE [asrkit decode args...]
# Decodes FEATS/dev once per value of OPT (--acwt or --lm-weight) into
# MODEL/decode_dev_NAME_<opt><value>, scores each, decodes FEATS/test once at the dev-best value
# into MODEL/decode_test_NAME (which records the value in a file named after OPT and the dev
# dir chosen in dev_best), and prints its score (stage 5).
tune_then_test() {
  local mdir=$1 gfile=$2 feats=$3 opt=$4 values=$5 name=$6 dep=$7 key=${4#--} v dir
  local dirs=() best best_wer
  shift 7
  for v in $values; do
    dir=$mdir/decode_dev_${name}_$key$v
    if run_stage 4 && stale "$dir/text" "$gfile" "$dep"; then
      log 4 "decoding dev with $mdir, $name, $opt $v"
      asrkit decode "$mdir" "$feats/dev" --graph "$(dirname "$gfile")" "$opt" "$v" --out "$dir" "$@"
    fi
    [ -f "$dir/text" ] || continue
    if stale "$dir/score.json" "$dir/text"; then
      asrkit score data/dev/text "$dir/text" --name "dev_$(basename "$mdir")_${name}_$key$v" >/dev/null
    fi
    dirs+=("$dir")
  done
  [ ${#dirs[@]} -gt 0 ] || return 0
  read -r best best_wer < <(python3 "$recipe_dir/../../scripts/best_decode.py" "${dirs[@]}")
  v=${best##*_"$key"}
  dir=$mdir/decode_test_$name
  if run_stage 4 && { stale "$dir/text" "$gfile" "$dep" || [ "$(cat "$dir/$key" 2>/dev/null)" != "$v" ]; }; then
    log 4 "decoding test with $mdir, $name, $opt $v (dev WER $best_wer%)"
    asrkit decode "$mdir" "$feats/test" --graph "$(dirname "$gfile")" "$opt" "$v" --out "$dir" "$@"
    echo "$v" > "$dir/$key"
    basename "$best" > "$dir/dev_best"
  fi
  if run_stage 5 && [ -f "$dir/text" ]; then
    if stale "$dir/score.txt" "$dir/text"; then
      asrkit score data/test/text "$dir/text" --name "test_$(basename "$mdir")_$name" > /dev/null
    fi
    echo "== $mdir $name: dev WER $best_wer% at $opt $v; test =="; sed -n 3,5p "$dir/score.txt"
  fi
}

# make_lm NAME: data/lm/NAME.arpa (kn3: Kneser-Ney trigram of data/train/text; an4: etc/an4.lm)
make_lm() {
  mkdir -p data/lm
  case $1 in
    an4) [ -f data/lm/an4.arpa ] || cp "$an4_dir/etc/an4.lm" data/lm/an4.arpa ;;
    kn3) [ -f data/lm/kn3.arpa ] || \
           asrkit train-lm ngram data/train/text data/lm/kn3.arpa --order 3 --dev data/dev/text ;;
    *) echo "$0: unknown LM '$1' (an4 or kn3)" >&2; exit 1 ;;
  esac
}

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
    for lm in $gmm_lms; do make_lm "$lm"; done
  fi
  if run_stage 3; then
    log 3 "training $exp (HMM-GMM) with $conf"
    asrkit train conf="$conf" exp_dir="$exp" data.train=dump/mfcc/train data.lang=data/lang \
      ${overrides[@]+"${overrides[@]}"}
  fi
  stages=${gmm_decode:-$(ls -d "$exp"/*/ 2>/dev/null | xargs -n1 basename | sort || true)}
  for st in $stages; do
    [ -f "$exp/$st/.done" ] || continue
    for lm in $gmm_lms; do
      graph=$exp/$st/graph_$lm
      if run_stage 4 && stale "$graph/HCLG.fst" "$exp/$st/final.mdl"; then
        log 4 "mkgraph $graph"
        asrkit mkgraph data/lang data/lm/$lm.arpa "$exp/$st" "$graph"
      fi
      tune_then_test "$exp/$st" "$graph/HCLG.fst" dump/mfcc --acwt "$acwts" "graph_$lm" \
        "$exp/$st/final.mdl" --nj "$nj"
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
  for lm in $ctc_lms; do make_lm "$lm"; done
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

for lm in $ctc_lms; do
  graph=$exp/graph_tlg_$lm
  if run_stage 4 && stale "$graph/TLG.fst" data/lm/$lm.arpa "$token.model"; then
    log 4 "mkgraph --ctc $graph"
    asrkit mkgraph --ctc "$token.model" data/lm/$lm.arpa "$graph"
  fi
  tune_then_test "$exp" "$graph/TLG.fst" dump/fbank --lm-weight "$lm_weights" "tlg_$lm" \
    "$exp/checkpoints/last.pt" --method wfst --avg "$avg"
done
