"""Static process sets given to init, as a horovod.tensorflow program gives them."""
import json
import sys

import tensorflow as tf

import distrain.tensorflow as hvd

evens, odds = hvd.ProcessSet([0, 2]), hvd.ProcessSet([1, 3])
hvd.init(process_sets=[evens, odds])
mine = evens if hvd.rank() % 2 == 0 else odds
total = hvd.allreduce(tf.constant([float(hvd.rank())]), op=hvd.Sum, process_set=mine)
root = hvd.broadcast(tf.constant([hvd.rank()]), root_rank=mine.ranks[-1], process_set=mine)
try:
    hvd.add_process_set([0, 1])      # static sets only: adding one later is refused
    added = "added"
except ValueError as exc:
    added = str(exc)
row = {"rank": hvd.rank(), "ids": [evens.process_set_id, odds.process_set_id],
       "sum": float(total.numpy()[0]), "root": int(root.numpy()[0]), "add": added,
       "backend": hvd.collectives.backend_name()}
rows = hvd.allgather_object(row)
if hvd.rank() == 0:  # one writer: the launcher can split a line two ranks print at once
    sys.stdout.write(json.dumps(rows) + "\n")
    sys.stdout.flush()
