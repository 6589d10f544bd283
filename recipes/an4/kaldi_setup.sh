#!/usr/bin/env bash
# AN4 HMM-GMM ladder in Kaldi's setup, for a like-for-like comparison with Kaldi's published
# AN4 numbers (mono 10.61, tri1 10.48, LDA+MLLT 11.38, SAT 5.95 % test WER): all 948 training
# utterances (no dev held out), AN4's own LMs, test WER at each acoustic scale (there is no dev
# set here; Kaldi's scoring also reports its best LM weight on test). LMs: an4 = etc/an4.lm
# (a flat unigram over 107 words) and ug = a unigram of the 948 training transcripts (what the
# distribution's an4.ug.lm is).
#
#   recipes/an4/kaldi_setup.sh /path/to/an4 WORK_DIR
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 AN4_DIR WORK_DIR" >&2; exit 1; }
an4=$(cd "$1" && pwd)
conf=$(cd "$(dirname "$0")" && pwd)/conf/train_full.yaml
[ -f "$an4/etc/an4.dic" ] || { echo "$0: $an4 is not an AN4 root (no etc/an4.dic)" >&2; exit 1; }
mkdir -p "$2" && cd "$2"
[ -f data/train/text ] || asrkit prep an4 "$an4" data --dev-utts 0
for p in train test; do
  [ -f dump/mfcc/$p/feats.scp ] || asrkit features data/$p dump/mfcc/$p --type mfcc --nj 2
done
[ -f data/lang/words.txt ] || asrkit lang "$an4/etc/an4.dic" data/lang --format cmu \
  --phones "$an4/etc/an4.phone" --text data/train/text --text data/test/text
mkdir -p data/lm
cp "$an4/etc/an4.lm" data/lm/an4.arpa
[ -f data/lm/ug.arpa ] || asrkit train-lm ngram data/train/text data/lm/ug.arpa --order 1
asrkit train conf="$conf" model=hmm_gmm exp_dir=exp/gmm data.train=dump/mfcc/train \
  data.lang=data/lang
for lm in an4 ug; do
  for st in mono tri1 tri2 tri3; do
    g=exp/gmm/$st/graph_$lm
    [ -f $g/HCLG.fst ] || asrkit mkgraph data/lang data/lm/$lm.arpa exp/gmm/$st $g
    for acwt in 0.067 0.083 0.1 0.125; do
      d=exp/gmm/$st/decode_test_${lm}_$acwt
      [ -f $d/text ] || asrkit decode exp/gmm/$st dump/mfcc/test --graph $g --acwt $acwt \
        --nj 2 --out $d
      asrkit score data/test/text $d/text --name test_${st}_${lm}_acwt$acwt > /dev/null
    done
  done
done
