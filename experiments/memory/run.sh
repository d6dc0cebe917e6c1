#!/usr/bin/env bash
# Train unet3d_small on a folder data set larger than the memory the run may use (issue 18).
#   sudo bash experiments/memory/run.sh [LIMIT_MB] [CASES]
# The run is put in a cgroup-v1 memory group with memory.limit_in_bytes = LIMIT_MB (page cache
# included, as the kernel counts it); the data set's arrays are larger than that. A loader that
# read the whole data set into memory would be killed by the kernel; jaxseg reads cases one at a
# time into its preprocessed cache and trains from patches of it.
set -euo pipefail
cd "$(dirname "$0")/../.."
LIMIT_MB=${1:-1536}
CASES=${2:-200}
DATA=${DATA:-/tmp/jaxseg_big}
RUN=${RUN:-/tmp/jaxseg_big_run}
OUT=experiments/memory/out
mkdir -p $OUT
[ -d $DATA/images ] || .venv/bin/python experiments/memory/make_folder.py $DATA --cases $CASES --shape 64,200,200
.venv/bin/python experiments/memory/make_folder.py $DATA-val --cases 2 --shape 64,200,200 --seed 1 >/dev/null
du -sh $DATA | tee $OUT/run.txt
CG=/sys/fs/cgroup/memory/jaxseg_memdemo
mkdir -p $CG
echo $((LIMIT_MB * 1024 * 1024)) > $CG/memory.limit_in_bytes
echo 0 > $CG/memory.max_usage_in_bytes
rm -rf $RUN
echo "memory.limit_in_bytes = $LIMIT_MB MiB" | tee -a $OUT/run.txt
set +e
bash -c "echo \$\$ > $CG/cgroup.procs; exec /usr/bin/time -v .venv/bin/jaxseg train --model unet3d_small \
  --data folder:$DATA --val-data folder:$DATA-val --patch-size 16,64,64 --epochs 1 --workdir $RUN --json" \
  > $OUT/train.txt 2> $OUT/train.err
status=$?
set -e
echo "exit status $status" | tee -a $OUT/run.txt
echo "cgroup peak (memory.max_usage_in_bytes): $(( $(cat $CG/memory.max_usage_in_bytes) / 1048576 )) MiB" | tee -a $OUT/run.txt
echo "times usage reached the limit and the kernel reclaimed (memory.failcnt): $(cat $CG/memory.failcnt)" | tee -a $OUT/run.txt
echo "OOM kills: $(grep "^oom_kill " $CG/memory.oom_control | cut -d" " -f2)" | tee -a $OUT/run.txt
grep -E "Maximum resident|Elapsed" $OUT/train.err | tee -a $OUT/run.txt
tail -1 $OUT/train.txt | tee -a $OUT/run.txt
rmdir $CG 2>/dev/null || true
