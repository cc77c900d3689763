#!/usr/bin/env bash
# Behaviour unchanged (issue 14): the code before (c73202f) and after, alternated on this machine.
set -u
PY=/work/main/.venv/bin/python
OUT=/work/exp/ab14
for round in 1 2; do
  for tree in before main; do
    dir=/work/wt-$tree; [ $tree = main ] && dir=/work/main
    echo "== $(date +%T) round $round $tree pipeline"
    (cd $dir && $PY -m streamer bench pipeline --quick --json $OUT/pipeline-$tree-$round.json > $OUT/pipeline-$tree-$round.log 2>&1)
    echo "== $(date +%T) round $round $tree e2e"
    (cd $dir && $PY -m streamer bench e2e --quick --json $OUT/e2e-$tree-$round.json > $OUT/e2e-$tree-$round.log 2>&1)
  done
done
for tree in before main; do
  dir=/work/wt-$tree; [ $tree = main ] && dir=/work/main
  echo "== $(date +%T) chaos $tree"
  (cd $dir && $PY -m streamer chaos --json $OUT/chaos-$tree.json > $OUT/chaos-$tree.log 2>&1; echo "rc=$?" >> $OUT/chaos-$tree.log)
done
echo "== $(date +%T) done"
