#!/bin/bash
# SLURM array job: evaluate configs/big.yaml in 100 shards, one shard per array task.
#
# Submit from the repository root (the directory holding configs/ and .venv/), then merge once every
# task has finished successfully:
#
#     jid=$(sbatch --parsable examples/slurm/job.sh)
#     sbatch --dependency=afterok:"$jid" examples/slurm/merge.sh
#
# Task K runs `phasediag run configs/big.yaml --shard K/100` and writes its part of the grid to the
# default shard directory outputs/big/shard-KKKK-of-0100/ (results.npz + meta.json; no figures: the
# merge draws them). The number of shards is fixed below rather than taken from
# $SLURM_ARRAY_TASK_COUNT, so that re-submitting only some tasks (sbatch --array=3,17 ...) still runs
# shard 3 of 100, not shard 3 of 2.
#
# --resume: a task killed by the time limit or pre-emption restarts from its last checkpoint (finished
# chunks are saved every --checkpoint-every seconds, default 5, and at once on SIGTERM, which SLURM
# sends at the time limit), and a task whose shard is complete does nothing. So after failures,
# re-submit the failed ids (or the whole array) and merge again.
#
# Sizing (docs/benchmarks.md, "Running a very large sweep on a SLURM cluster"): one shard of
# configs/big.yaml is ~1e5 points and takes about a second. The limits below are those of a 1e9-point
# sweep (1e7 points per task, ~1.5 GB with every metric stored); one core per task (drop --workers and
# set --cpus-per-task=1) is the cheaper choice when the queue is not the limit.
#
#SBATCH --job-name=phasediag-big
#SBATCH --array=1-100
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=00:30:00
#SBATCH --output=slurm-%x-%A_%a.out

set -euo pipefail

NSHARDS=100                              # must match --array=1-100 above and NSHARDS in merge.sh
CONFIG=configs/big.yaml
VENV=${PHASEDIAG_VENV:-.venv}            # the virtual environment phasediag is installed in

cd "${SLURM_SUBMIT_DIR:-.}"              # SLURM starts in the submission directory; be explicit
. "$VENV/bin/activate"

# exec: phasediag itself receives SLURM's SIGTERM, saves its finished chunks and exits with status 143
exec phasediag run "$CONFIG" --quiet --resume --no-plot \
    --workers "${SLURM_CPUS_PER_TASK:-1}" \
    --shard "$SLURM_ARRAY_TASK_ID/$NSHARDS"
