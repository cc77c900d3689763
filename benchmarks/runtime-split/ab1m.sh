#!/usr/bin/env bash
PY=/work/main/.venv/bin/python
for r in 1 2 3; do for tree in before main; do
  dir=/work/wt-$tree; [ $tree = main ] && dir=/work/main
  (cd $dir && $PY -m streamer bench pipeline --modes stateful --backends numpy --devices 100000 1000000 --seconds 4 --json /work/exp/ab14/p1m-$tree-$r.json > /work/exp/ab14/p1m-$tree-$r.log 2>&1)
done; done
