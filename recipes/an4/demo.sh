#!/usr/bin/env bash
# `make demo`: the best AN4 systems asrkit trains in minutes on a 2-core CPU, and one table.
#
#   1. HMM-GMM, Kaldi's train_mono.sh -> train_deltas.sh -> train_lda_mllt.sh (the AN4 sizes of
#      conf/full/hmm_gmm.yaml): MFCC, lang dir from etc/an4.dic, Kneser-Ney trigram of the
#      training transcripts, HCLG of the LDA+MLLT stage, acoustic scale chosen on dev, test
#      decoded once:  run.sh --conf conf/train_full.yaml --gmm-lms kn3 --gmm-decode tri2 -- model=hmm_gmm
#   2. Conformer-CTC (conf/train_demo.yaml: 4 blocks, D 144, BPE-150 units, 15 epochs), the
#      last 5 epochs averaged, greedy CTC, no LM:  run.sh --conf conf/train_demo.yaml --avg 5
#   3. scripts/results_table.py --compare: dev/test WER, test CER, training time, decoding RTF,
#      printed last and written to WORK_DIR/RESULTS_demo.md.
#
# After the shared data prep the two systems train side by side, one CPU core each (their
# training times in the table are wall times while sharing the machine). Both runs share
# WORK_DIR (data/, dump/, exp/) and skip what is already complete, so a second `make demo`
# only prints the table again.
set -euo pipefail

usage() {
  cat <<USAGE
Usage: $0 [--an4-dir DIR] [--work-dir DIR] [--nj N]
  --an4-dir DIR   AN4 corpus root (default: \$AN4_DIR)
  --work-dir DIR  where data/ dump/ exp/ go (default: demo/ in the current directory)
  --nj N          parallel jobs for features and HMM-GMM decoding (default 2)
USAGE
}

recipe_dir=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$recipe_dir/../.." && pwd)
an4_dir=${AN4_DIR:-}
work_dir=demo
nj=2
while [ $# -gt 0 ]; do
  case $1 in
    --an4-dir) an4_dir=$2; shift 2 ;;
    --work-dir) work_dir=$2; shift 2 ;;
    --nj) nj=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "$0: unknown option $1" >&2; usage >&2; exit 1 ;;
  esac
done
mkdir -p "$work_dir"
work_dir=$(cd "$work_dir" && pwd)
stamp() { date '+%H:%M:%S'; }
t0=$(date +%s)

run=("$recipe_dir/run.sh" --an4-dir "$an4_dir" --work-dir "$work_dir" --nj 1)
gmm=(--conf "$recipe_dir/conf/train_full.yaml" --tag gmm --gmm-lms kn3 --gmm-decode tri2)
nnet=(--conf "$recipe_dir/conf/train_demo.yaml" --tag conformer --avg 5)
fail() { tail -n 30 "$work_dir/$1.log"; echo "demo: the $1 run failed; see $work_dir/$1.log" >&2
         exit 1; }

echo "$(stamp) [demo] 1/3 data prep, MFCC, lang dir, KN trigram (log: $work_dir/gmm.log)"
"${run[@]}" "${gmm[@]}" --stop-stage 2 -- model=hmm_gmm > "$work_dir/gmm.log" 2>&1 || fail gmm
# The two systems are independent: each trains on one core, side by side.
echo "$(stamp) [demo] 2/3 training and decoding, side by side on one core each:"
echo "         HMM-GMM mono -> tri1 -> LDA+MLLT (log: $work_dir/gmm.log)"
echo "         Conformer-CTC, 15 epochs (log: $work_dir/conformer.log)"
OMP_NUM_THREADS=1 "${run[@]}" "${gmm[@]}" --stage 3 -- model=hmm_gmm >> "$work_dir/gmm.log" 2>&1 &
gmm_pid=$!
OMP_NUM_THREADS=1 "${run[@]}" "${nnet[@]}" --stage 1 -- trainer.num_threads=1 > "$work_dir/conformer.log" 2>&1 \
  || { kill "$gmm_pid" 2>/dev/null; fail conformer; }
t1=$(date +%s)
echo "$(stamp) [demo] Conformer done ($((t1 - t0)) s since the start)"
wait "$gmm_pid" || fail gmm
t2=$(date +%s)
echo "$(stamp) [demo] HMM-GMM done ($((t2 - t0)) s since the start)"

echo "$(stamp) [demo] 3/3 results (whole demo: $((t2 - t0)) s)"
echo
cd "$work_dir"
python3 "$root/scripts/results_table.py" --compare --out RESULTS_demo.md \
  exp/gmm/tri2:graph_kn3 exp/conformer:ctc_greedy
echo
echo "AN4 test set: 130 utterances, 773 words. Table also in $work_dir/RESULTS_demo.md."
