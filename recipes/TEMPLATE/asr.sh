# shellcheck shell=bash
# The stage template every asrkit recipe shares (ESPnet2's TEMPLATE/asr1/asr.sh idea, Kaldi's
# steps/ + utils/ habit). A recipe's run.sh sets its defaults, defines its corpus hooks, sources
# this file and calls `asr_main "$@"`. Stages, the same in every recipe:
#
#   stage 0  prep      recipe_prep (corpus -> data/{train,dev,test}, Kaldi data dirs)
#   stage 1  features  asrkit features: MFCC (HMM-GMM) or fbank (neural) -> dump/<type>/<set>
#   stage 2  lang, LM  HMM-GMM: recipe_lang -> data/lang; LMs -> data/lm/<name>.arpa
#                      neural: asrkit tokenizer -> data/token/<type>_<vocab>.model (+ --ctc-lms)
#   stage 3  train     asrkit train conf=<conf> -> exp/<tag>
#   stage 4  decode    HMM-GMM: mkgraph per stage and LM, dev at each --acwt, test at the best;
#                      neural: --decode-method on dev/test; TLG per --ctc-lms, weight tuned on dev;
#                      both: n-best lists rescored with each --rescore-lms LM (weight from dev);
#                      HMM-GMM with --hybrid S: then a hybrid DNN-HMM trained on S's alignments
#                      and decoded through S's graph (hybrid_system below)
#   stage 5  score     asrkit score -> score.txt; exp/RESULTS.md: every system decoded (table)
#
# Each --conf file is one system: it trains HMM-GMM when it names model hmm_gmm (or with
# `-- model=hmm_gmm`), a neural model otherwise. Each stage skips when its outputs are
# complete, so a killed run resumes where it stopped.
#
# Hooks a recipe defines (run in the work dir):
#   recipe_prep          stage 0: write data/train, data/dev, data/test
#   recipe_lang          stage 2: write data/lang (asrkit lang ...)
#   recipe_lm NAME       write data/lm/NAME.arpa for a corpus LM (kn3 is the template's own)
# and, optionally, recipe_opts=("name:var" ...) for its own --name VALUE options (stored in
# $var, made absolute when they name an existing path), recipe_flags=("name:var" ...) for
# its --name switches (set $var to true) and recipe_usage (their help lines).

asr_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
stage=0 stop_stage=5 tag= work_dir= nj=2 avg=1 method=ctc_greedy beam=10 ctc_weight=0.3
vocab_size=${vocab_size:-150} token_type=bpe speed_perturb=
acwts=${acwts:-"0.067 0.083 0.1 0.125"} gmm_lms=${gmm_lms:-kn3} ctc_lms=${ctc_lms:-}
gmm_decode= lm_weights=${lm_weights:-"0.2 0.3 0.5 0.8"} overrides=() launcher=
hybrid=${hybrid:-} hybrid_acwts=${hybrid_acwts:-"0.1 0.15 0.2 0.25"} hybrid_opts=${hybrid_opts:-}
rescore_lms=${rescore_lms:-} rescore_weights=${rescore_weights:-"0.6 0.8 1.0 1.2"} nbest=${nbest:-50}
gpt_opts=${gpt_opts:-}
dev_set=${dev_set:-dev} test_sets=${test_sets:-test}  # data/<set>; settings are tuned on dev_set

asr_usage() {
  cat <<USAGE
Usage: $0 [options] [-- KEY=VALUE ...]
${recipe_usage:-}
  --stage N / --stop-stage N   first / last stage to run (0-5; default 0 / 5)
  --conf "FILE ..." training config(s), one system each (default: ${conf:-none})
  --tag NAME        experiment name under exp/ (default: the config file's name)
  --work-dir DIR    where data/ dump/ exp/ are written (default: the recipe's directory)
  --nj N            parallel jobs for features and HMM-GMM decoding (default $nj)
  --avg N           average the last N epoch checkpoints for decoding (default $avg)
  --decode-method M ctc_greedy, ctc_prefix_beam, attention_beam or joint_ctc_attention
  --beam N          beam size of the beam methods (default $beam)
  --ctc-weight W    CTC weight of joint_ctc_attention decoding (default $ctc_weight)
  --token-type T    sentencepiece units: bpe (default), char or unigram
  --vocab-size N    tokenizer vocabulary (default $vocab_size)
  --speed-perturb F speed perturbation of train, e.g. 0.9,1.0,1.1 (default: none)
  --acwt "A ..."    HMM-GMM: acoustic scales tried on dev; test uses the best ("$acwts")
  --gmm-lms "L ..." HMM-GMM: LMs to build graphs with ("$gmm_lms"; kn3 = Kneser-Ney 3-gram of
                    data/train/text, others from the recipe)
  --gmm-decode "S ..." HMM-GMM: stages to build graphs for and decode (default: all trained)
  --hybrid "S ..."  HMM-GMM: after decoding, train a hybrid DNN-HMM (model=hybrid) on each
                    stage S's alignments (fMLLR features when S is SAT, 40-dim fbank otherwise),
                    decode it with S's graph of the first --gmm-lms LM (default: none)
  --hybrid-acwt "A ..." acoustic scales tried on dev for the hybrid ("$hybrid_acwts")
  --hybrid-opts "K=V ..." Hydra overrides for the hybrid's training, e.g.
                    "trainer.max_epochs=30 model.encoder=conformer" (default: none)
  --ctc-lms "L ..." neural CTC: also decode over a TLG graph of each LM, weight tuned on dev
  --lm-weights "W ..." LM weights tried on dev for --ctc-lms ("$lm_weights")
  --rescore-lms "L ..." second pass: rescore the --nbest lists of each graph's decoding with
                    these LMs in place of the graph's LM (default: none); "gpt": a GPT
                    (asrkit train-lm model=gpt) pretrained on the recipe's LM text
                    (recipe_gpt_text; default data/train/text) with the neural tokenizer,
                    exp/lm_gpt, used as hf:exp/lm_gpt/hf
  --gpt-opts "K=V ..." Hydra overrides of that GPT's training, e.g. "trainer.max_steps=20000
                    trainer.max_minutes=50" (default: none)
  --rescore-weights "W ..." their weights tried on dev ("$rescore_weights")
  --nbest N         n-best size for rescoring (default $nbest)
  --launcher "CMD"  run training under CMD, e.g. "torchrun --nproc_per_node=8" (DDP on 8 GPUs;
                    multi-node: add --nnodes/--node_rank/--master_addr on each node)
  -- KEY=VALUE ...  Hydra overrides for the train stage (model=hmm_gmm: the HMM-GMM path)
USAGE
}

asr_parse() {
  local spec matched
  while [ $# -gt 0 ]; do
    matched=false
    for spec in ${recipe_opts[@]+"${recipe_opts[@]}"}; do
      # a recipe option naming an existing file or folder is stored as an absolute path
      if [ "$1" = "--${spec%%:*}" ]; then matched=true
        if [ -e "$2" ]; then printf -v "${spec#*:}" '%s' "$(abspath "$2")"
        else printf -v "${spec#*:}" '%s' "$2"; fi
      fi
    done
    if $matched; then shift 2; continue; fi
    for spec in ${recipe_flags[@]+"${recipe_flags[@]}"}; do
      [ "$1" != "--${spec%%:*}" ] || { printf -v "${spec#*:}" true; matched=true; }
    done
    if $matched; then shift; continue; fi
    case $1 in
      --stage) stage=$2 ;; --stop-stage) stop_stage=$2 ;; --tag) tag=$2 ;;
      --conf) conf=$2 ;; --work-dir) work_dir=$2 ;; --nj) nj=$2 ;; --avg) avg=$2 ;;
      --decode-method) method=$2 ;; --beam) beam=$2 ;; --ctc-weight) ctc_weight=$2 ;;
      --vocab-size) vocab_size=$2 ;; --token-type) token_type=$2 ;;
      --speed-perturb) speed_perturb=$2 ;; --acwt) acwts=$2 ;; --gmm-lms) gmm_lms=$2 ;;
      --ctc-lms) ctc_lms=$2 ;; --gmm-decode) gmm_decode=$2 ;; --lm-weights) lm_weights=$2 ;;
      --launcher) launcher=$2 ;; --rescore-lms) rescore_lms=$2 ;;
      --rescore-weights) rescore_weights=$2 ;; --nbest) nbest=$2 ;;
      --hybrid) hybrid=$2 ;; --hybrid-acwt) hybrid_acwts=$2 ;; --hybrid-opts) hybrid_opts=$2 ;;
      --gpt-opts) gpt_opts=$2 ;;
      -h|--help) asr_usage; exit 0 ;;
      --) shift; overrides=("$@"); return ;;
      *) echo "$0: unknown option $1" >&2; asr_usage >&2; exit 1 ;;
    esac
    shift 2
  done
}

log() { echo "$(date '+%H:%M:%S') [$recipe_name stage $1] $2" >&2; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
# stale OUT DEP...: OUT is missing or older than one of the DEPs
stale() { local out=$1 f; shift; [ -f "$out" ] || return 0
  for f; do [ "$f" -nt "$out" ] && return 0; done; return 1; }
abspath() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }

# tune_then_test MODEL GRAPH_FILE FEATS OPT "VALUES" NAME DEP [asrkit decode args...]
# Decodes FEATS/$dev_set once per value of OPT (--acwt or --lm-weight) into
# MODEL/decode_<dev_set>_NAME_<opt><value>, scores each, decodes each of $test_sets once at the
# dev-best value into MODEL/decode_<set>_NAME (the value in a file named after OPT, the dev
# dir in dev_best).
tune_then_test() {
  local mdir=$1 gfile=$2 feats=$3 opt=$4 values=$5 name=$6 dep=$7 key=${4#--} v dir part
  local dirs=() best best_wer
  shift 7
  for v in $values; do
    dir=$mdir/decode_${dev_set}_${name}_$key$v
    if run_stage 4 && stale "$dir/text" "$gfile" "$dep"; then
      log 4 "decoding $dev_set with $mdir, $name, $opt $v"
      asrkit decode "$mdir" "$feats/$dev_set" --graph "$(dirname "$gfile")" "$opt" "$v" --out "$dir" "$@"
    fi
    [ -f "$dir/text" ] || continue
    stale "$dir/score.json" "$dir/text" && asrkit score "data/$dev_set/text" "$dir/text" \
      --name "${dev_set}_$(basename "$mdir")_${name}_$key$v" >/dev/null
    dirs+=("$dir")
  done
  [ ${#dirs[@]} -gt 0 ] || return 0
  read -r best best_wer < <(python3 "$asr_root/scripts/best_decode.py" "${dirs[@]}")
  v=${best##*_"$key"}
  for part in $test_sets; do
    dir=$mdir/decode_${part}_$name
    if run_stage 4 && { stale "$dir/text" "$gfile" "$dep" || [ "$(cat "$dir/$key" 2>/dev/null)" != "$v" ]; }; then
      log 4 "decoding $part with $mdir, $name, $opt $v ($dev_set WER $best_wer%)"
      asrkit decode "$mdir" "$feats/$part" --graph "$(dirname "$gfile")" "$opt" "$v" --out "$dir" "$@"
      echo "$v" > "$dir/$key"
      basename "$best" > "$dir/dev_best"
    fi
    if run_stage 5 && [ -f "$dir/text" ]; then
      stale "$dir/score.txt" "$dir/text" && asrkit score "data/$part/text" "$dir/text" \
        --name "${part}_$(basename "$mdir")_$name" > /dev/null
      echo "== $mdir $name: $dev_set WER $best_wer% at $opt $v; $part =="; sed -n 3,5p "$dir/score.txt"
    fi
  done
  results+=("$mdir:$name")
}

# rescore_then_test MODEL NAME LM FEATS GRAPH_DIR KEY [asrkit decode args...]
# The second pass of a graph decoded by tune_then_test (NAME, LM its first-pass LM): n-best
# lists of $dev_set and $test_sets at the dev-best KEY (acwt or lm-weight) into
# MODEL/decode_<set>_NAME_nbest, then for each of $rescore_lms: the dev lists rescored at each
# of $rescore_weights with that LM in place of LM (asrkit rescore --old-lm; Kaldi's
# lmrescore), and dev and each test set rescored once at the dev-best weight into
# MODEL/decode_<set>_NAME_rescore_<lm>.
rescore_then_test() {
  local mdir=$1 name=$2 lm=$3 feats=$4 gdir=$5 key=$6 v part dir r w tune
  shift 6
  [ -n "$rescore_lms" ] && [ -f "$mdir/decode_${test_sets%% *}_$name/$key" ] || return 0
  v=$(cat "$mdir/decode_${test_sets%% *}_$name/$key")
  for part in $dev_set $test_sets; do
    dir=$mdir/decode_${part}_${name}_nbest
    if run_stage 4 && { stale "$dir/nbest" "$gdir"/*.fst || [ "$(cat "$dir/$key" 2>/dev/null)" != "$v" ]; }; then
      log 4 "n-best ($nbest) of $part with $mdir, $name, --$key $v"
      asrkit decode "$mdir" "$feats/$part" --graph "$gdir" "--$key" "$v" --nbest "$nbest" \
        --out "$dir" "$@"
      echo "$v" > "$dir/$key"
    fi
  done
  for r in $rescore_lms; do
    make_lm "$r"
    tune=$mdir/decode_${dev_set}_${name}_nbest/tune_rescore_$r.json
    if run_stage 4 && stale "$tune" "$mdir/decode_${dev_set}_${name}_nbest/nbest" "$(lm_file "$r")"; then
      log 4 "rescoring $dev_set n-best of $mdir $name with $r: weights $rescore_weights"
      python3 "$asr_root/scripts/tune_lm_weight.py" rescore \
        "$mdir/decode_${dev_set}_${name}_nbest/nbest" "data/$dev_set/text" --lm "$(lm_spec "$r")" \
        --old-lm "ngram:data/lm/$lm.arpa" --weights "${rescore_weights// /,}" --bonuses 0 \
        --out "$tune" | tail -n 1
    fi
    [ -f "$tune" ] || continue
    w=$(python3 "$asr_root/scripts/tune_lm_weight.py" best "$tune")
    for part in $dev_set $test_sets; do
      dir=$mdir/decode_${part}_${name}_rescore_$r
      if run_stage 4 && { stale "$dir/text" "$mdir/decode_${part}_${name}_nbest/nbest" "$tune" \
                          || [ "$(cat "$dir/lm-weight" 2>/dev/null)" != "$w" ]; }; then
        asrkit rescore "$mdir/decode_${part}_${name}_nbest/nbest" "$dir" --lm "$(lm_spec "$r")" \
          --old-lm "ngram:data/lm/$lm.arpa" --lm-weight "$w" > /dev/null
        echo "$w" > "$dir/lm-weight"
        cp "$mdir/decode_${part}_${name}_nbest/decode_summary.json" "$dir/"
      fi
      if run_stage 5 && [ -f "$dir/text" ] && stale "$dir/score.json" "$dir/text"; then
        asrkit score "data/$part/text" "$dir/text" --name "${part}_$(basename "$mdir")_${name}_rescore_$r" > /dev/null
      fi
    done
  done
}

# lm_spec NAME / lm_file NAME: the asrkit rescore spec of an LM and the file it is built into
lm_spec() { if [ "$1" = gpt ]; then echo "hf:exp/lm_gpt/hf"; else echo "ngram:data/lm/$1.arpa"; fi; }
lm_file() { if [ "$1" = gpt ]; then echo "exp/lm_gpt/.done"; else echo "data/lm/$1.arpa"; fi; }

# train_gpt: exp/lm_gpt, a GPT pretrained on recipe_gpt_text's file (a recipe hook that makes
# it and prints its path; one sentence a line) or data/train/text, with the neural tokenizer
train_gpt() {
  local text=data/train/text utt_ids=true tok=data/token/${token_type}_${vocab_size}
  if declare -F recipe_gpt_text > /dev/null; then text=$(recipe_gpt_text); utt_ids=false; fi
  [ -f $tok.model ] || asrkit tokenizer data/train/text $tok --model-type "$token_type" \
    --vocab-size "$vocab_size"
  log 4 "GPT language model on $text (exp/lm_gpt)"
  asrkit train-lm model=gpt data.train="$text" data.utt_ids=$utt_ids data.dev=data/$dev_set/text \
    data.dev_utt_ids=true data.tokenizer=$tok.model exp_dir=exp/lm_gpt $gpt_opts
}

# make_lm NAME: data/lm/NAME.arpa (kn3: Kneser-Ney trigram of data/train/text; gpt: train_gpt;
# else recipe_lm)
make_lm() {
  mkdir -p data/lm
  [ ! -f "$(lm_file "$1")" ] || return 0
  if [ "$1" = gpt ]; then
    train_gpt
  elif [ "$1" = kn3 ]; then
    asrkit train-lm ngram data/train/text data/lm/kn3.arpa --order 3 --dev data/dev/text
  else
    recipe_lm "$1"
  fi
}

gmm_system() {  # the HMM-GMM path of one config: $1 conf, $2 exp dir
  local c=$1 exp=$2 part st lm graph stages
  if run_stage 1; then
    for part in train $dev_set $test_sets; do
      log 1 "MFCC features for $part"
      asrkit features data/$part dump/mfcc/$part --type mfcc --nj "$nj"
    done
  fi
  if run_stage 2; then
    log 2 "lang dir and LMs ($gmm_lms)"
    recipe_lang
    for lm in $gmm_lms; do make_lm "$lm"; done
  fi
  if run_stage 3; then
    log 3 "training $exp (HMM-GMM) with $c"
    ${launcher:-asrkit} ${launcher:+-m asrkit.cli} train conf="$c" exp_dir="$exp" \
      data.train=dump/mfcc/train data.lang=data/lang \
      ${overrides[@]+"${overrides[@]}"}
  fi
  stages=${gmm_decode:-$(ls -d "$exp"/*/ 2>/dev/null | xargs -n1 basename | sort || true)}
  for st in $stages; do
    [ -f "$exp/$st/.done" ] || continue
    for lm in $gmm_lms; do
      graph=$exp/$st/graph_$lm
      if run_stage 4 && stale "$graph/HCLG.fst" "$exp/$st/final.mdl"; then
        log 4 "mkgraph $graph"
        asrkit mkgraph data/lang "data/lm/$lm.arpa" "$exp/$st" "$graph"
      fi
      tune_then_test "$exp/$st" "$graph/HCLG.fst" dump/mfcc --acwt "$acwts" "graph_$lm" \
        "$exp/$st/final.mdl" --nj "$nj"
      rescore_then_test "$exp/$st" "graph_$lm" "$lm" dump/mfcc "$graph" acwt --nj "$nj"
    done
  done
  for st in $hybrid; do hybrid_system "$exp" "$st"; done
}

# hybrid_system GMM_EXP S (stage 4, after the GMM decodes; --hybrid S): Kaldi's DNN-HMM rung.
# Aligns $dev_set with GMM_EXP/S (GMM_EXP/S/ali_<dev_set>), writes the network's input
# features: fMLLR-adapted when S is a SAT stage (Kaldi nnet1's DNN on fMLLR features, as
# steps/nnet/make_fmllr_feats.sh: train with the training speakers' transforms, dev and test
# with those of S's decodes at the dev-best acwt; dump/fmllr_S/<set>), else 40-dim fbank
# (dump/fbank40/<set>); trains GMM_EXP_hybrid_S (asrkit train model=hybrid, frame CE on S's
# pdf alignments; resumes from its checkpoints) and decodes it through S's graph of the first
# --gmm-lms LM, acwt tuned on dev over --hybrid-acwt, test once; with --rescore-lms, its n-best
# lists rescored as the GMMs' (rescore_then_test).
hybrid_system() {
  local gmm=$1/$2 hexp=${1}_hybrid_$2 lm=${gmm_lms%% *} feats part trans ali opts
  local graph=$gmm/graph_$lm first_test=${test_sets%% *}
  run_stage 4 || return 0
  if [ ! -f "$gmm/.done" ] || [ ! -f "$graph/HCLG.fst" ]; then
    echo "$0: --hybrid $2: needs the trained stage $gmm and its graph $graph (stages 3-4)" >&2
    exit 1
  fi
  ali=$gmm/ali_$dev_set
  if stale "$ali/pdf_ali.txt" "$gmm/final.mdl"; then
    log 4 "aligning $dev_set with $gmm (hybrid dev targets)"
    asrkit align "$gmm" data/lang "dump/mfcc/$dev_set" "$ali"
  fi
  if [ -f "$gmm/trans.ark" ]; then  # SAT: fMLLR features
    feats=dump/fmllr_$2
    for part in train $dev_set $test_sets; do
      case $part in
        train) trans=$gmm ;;
        "$dev_set") trans=$gmm/$(cat "$gmm/decode_${first_test}_graph_$lm/dev_best") ;;
        *) trans=$gmm/decode_${part}_graph_$lm ;;
      esac
      log 4 "fMLLR features of $part ($trans)"
      asrkit fmllr-feats "$gmm" "dump/mfcc/$part" "$trans" "$feats/$part"
    done
  else
    feats=dump/fbank40
    for part in train $dev_set $test_sets; do
      [ -f "$feats/$part/feats.scp" ] && continue
      log 4 "fbank features (40 bins) for $part"
      asrkit features "data/$part" "$feats/$part" --type fbank --num-mel-bins 40 --nj "$nj"
    done
  fi
  log 4 "training $hexp (hybrid DNN-HMM on the alignments of $gmm, $feats)"
  read -r -a opts <<< "$hybrid_opts"
  ${launcher:-asrkit} ${launcher:+-m asrkit.cli} train model=hybrid exp_dir="$hexp" \
    data.train="$feats/train" data.dev="$feats/$dev_set" data.alignment="$gmm" \
    data.dev_alignment="$ali" ${opts[@]+"${opts[@]}"}
  tune_then_test "$hexp" "$graph/HCLG.fst" "$feats" --acwt "$hybrid_acwts" "graph_$lm" \
    "$hexp/checkpoints/last.pt" --nj "$nj"
  rescore_then_test "$hexp" "graph_$lm" "$lm" "$feats" "$graph" acwt --nj "$nj"
}

nnet_system() {  # the neural path of one config: $1 conf, $2 exp dir
  local c=$1 exp=$2 part dir lm graph token=data/token/${token_type}_${vocab_size}
  local train_set=train${speed_perturb:+_sp}
  if run_stage 1; then
    for part in $dev_set $test_sets; do
      log 1 "fbank features for $part"
      asrkit features data/$part dump/fbank/$part --type fbank --nj "$nj"
    done
    log 1 "fbank features for train${speed_perturb:+ with speed perturbation $speed_perturb}"
    asrkit features data/train dump/fbank/$train_set --type fbank --nj "$nj" \
      ${speed_perturb:+--speed-perturb "$speed_perturb"}
  fi
  if run_stage 2; then
    [ -f $token.model ] || { log 2 "$token_type tokenizer ($vocab_size)"
      asrkit tokenizer data/train/text $token --model-type "$token_type" --vocab-size "$vocab_size"; }
    for lm in $ctc_lms; do make_lm "$lm"; done
  fi
  if run_stage 3; then
    log 3 "training $exp with $c"
    ${launcher:-asrkit} ${launcher:+-m asrkit.cli} train conf="$c" exp_dir="$exp" \
      data.train=dump/fbank/$train_set data.dev=dump/fbank/$dev_set data.tokenizer=$token.model \
      ${overrides[@]+"${overrides[@]}"}
  fi
  for part in $dev_set $test_sets; do
    dir=$exp/decode_${part}_${method}
    if run_stage 4 && stale "$dir/text" "$exp/checkpoints/last.pt"; then
      log 4 "decoding $part ($method)"
      asrkit decode "$exp" dump/fbank/$part --avg "$avg" --method "$method" --beam "$beam" \
        --ctc-weight "$ctc_weight"
    fi
    if run_stage 5 && [ -f "$dir/text" ]; then
      stale "$dir/score.txt" "$dir/text" && asrkit score data/$part/text "$dir/text" \
        --name "${part}_${method}" > /dev/null
      echo "== $exp: $part ==" ; cat "$dir/score.txt"
    fi
  done
  [ ! -f "$exp/decode_${test_sets%% *}_${method}/text" ] || results+=("$exp:$method")
  for lm in $ctc_lms; do
    graph=$exp/graph_tlg_$lm
    if run_stage 4 && stale "$graph/TLG.fst" "data/lm/$lm.arpa" "$token.model"; then
      log 4 "mkgraph --ctc $graph"
      asrkit mkgraph --ctc "$token.model" "data/lm/$lm.arpa" "$graph"
    fi
    tune_then_test "$exp" "$graph/TLG.fst" dump/fbank --lm-weight "$lm_weights" "tlg_$lm" \
      "$exp/checkpoints/last.pt" --method wfst --avg "$avg"
    rescore_then_test "$exp" "tlg_$lm" "$lm" dump/fbank "$graph" lm-weight --method wfst --avg "$avg"
  done
}

asr_main() {
  local c t o gmm confs=()
  asr_parse "$@"
  for c in $conf; do  # configs are read after the cd below: make their paths absolute now
    [ -f "$c" ] || { echo "$0: --conf: no such file: $c" >&2; exit 1; }
    confs+=("$(abspath "$c")")
  done
  work_dir=${work_dir:-$recipe_dir}
  mkdir -p "$work_dir"
  cd "$work_dir"
  if run_stage 0; then log 0 "data preparation"; recipe_prep; fi
  results=()
  for c in ${confs[@]+"${confs[@]}"}; do
    t=${tag:-$(basename "$c" .yaml)}
    gmm=false  # `-- model=hmm_gmm` on a neural config: exp/<conf>_hmm_gmm
    for o in ${overrides[@]+"${overrides[@]}"}; do
      [ "$o" != "model=hmm_gmm" ] || { gmm=true; [ -n "$tag" ] || t=${t}_hmm_gmm; }
    done
    grep -qE '^\s*-\s*override /model:\s*hmm_gmm' "$c" && gmm=true
    if $gmm; then
      gmm_system "$c" "exp/$t"
    else
      nnet_system "$c" "exp/$t"
    fi
  done
  if run_stage 5 && [ ${#results[@]} -gt 0 ]; then
    python3 "$asr_root/scripts/results_table.py" --compare --dev-set "$dev_set" \
      $(printf -- '--set %s ' $test_sets) ${rescore_lms:+$(printf -- '--rescored %s ' $rescore_lms)} \
      --out exp/RESULTS.md "${results[@]}"
  fi
}
