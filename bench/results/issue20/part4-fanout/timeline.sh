#!/bin/bash
# One lock hold: the timeline, before and after alternating, twice per loop.
for loop in uvloop asyncio; do
  for pair in 1 2; do
    for tree in before after; do
      echo "== $loop $tree pair $pair $(date -u +%H:%M:%S)"
      (cd /tmp/fanout-$tree && env PYTHONPATH=. taskset -c 0 /work/wt/fanout/.venv/bin/python -m bench.broadcast_timeline --loop $loop --rounds 40 --send-us 10 | sed -n 2,3p)
    done
  done
done
