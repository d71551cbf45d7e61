#!/bin/bash
# SLURM job: join the 100 shards written by examples/slurm/job.sh into outputs/big/, the result a
# single `phasediag run configs/big.yaml` would have written, bit for bit. Submit it after the array:
#
#     sbatch --dependency=afterok:<array job id> examples/slurm/merge.sh
#
# `phasediag merge` refuses an incomplete or mixed set of shards; if some tasks failed, re-submit them
# (sbatch --array=<their ids> examples/slurm/job.sh; --resume skips finished shards) and run this again.
#
# merge copies each shard's rows into place, so its memory is one block whatever the grid's size (it needs
# disk for the joined copy); drawing the figures loads the merged result once (~0.25 GB for configs/big.yaml as bundled).
# For grids of 1e9 points and more, set PHASEDIAG_MERGE_FLAGS=--no-plot (docs/benchmarks.md).
#
#SBATCH --job-name=phasediag-big-merge
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --time=00:30:00
#SBATCH --output=slurm-%x-%j.out

set -euo pipefail

NSHARDS=100                              # must match NSHARDS in job.sh
NAME=big                                 # the config's `name:`: outputs go to outputs/$NAME/
VENV=${PHASEDIAG_VENV:-.venv}

cd "${SLURM_SUBMIT_DIR:-.}"
. "$VENV/bin/activate"

# the default shard directories of `run --shard K/100`: outputs/big/shard-0001-of-0100 ... shard-0100-of-0100
shards=(outputs/"$NAME"/shard-*-of-"$(printf '%04d' "$NSHARDS")")
if [ "${#shards[@]}" -ne "$NSHARDS" ] || [ ! -d "${shards[0]}" ]; then
    echo "merge.sh: expected $NSHARDS shard directories outputs/$NAME/shard-*-of-$(printf '%04d' "$NSHARDS"), found ${#shards[@]}" >&2
    exit 1
fi

# PHASEDIAG_MERGE_FLAGS is deliberately unquoted so that it may hold several flags
# shellcheck disable=SC2086
exec phasediag merge "${shards[@]}" --out "outputs/$NAME" ${PHASEDIAG_MERGE_FLAGS:-}
