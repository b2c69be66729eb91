# Sourced by every hepprune job script (slurm/submit.py writes them).
#
# Why: a job asks for USR1 some minutes before its time limit, and clusters
# send it on preemption too (sbatch --signal=B:USR1@N). On USR1 the stage is
# stopped and the job requeues itself; when it starts again, the same command
# resumes from the stage's last committed checkpoint (every stage commits one
# per epoch, atomically), so the final result is the one an uninterrupted job
# gives. The signal comes at an unpredictable moment, so the handler is safe
# at any point: before the stage starts, while it runs, or after it finished.

HEPPRUNE_CHILD=""
HEPPRUNE_DONE=""

hepprune_requeue() {
    if [ -n "$HEPPRUNE_DONE" ]; then  # the stage already finished: nothing to resume
        echo "hepprune: USR1 after the stage finished; not requeueing" >&2
        return 0
    fi
    echo "hepprune: USR1 at $(date -Is): stopping at the last checkpoint, requeueing job ${SLURM_JOB_ID}" >&2
    if [ -n "$HEPPRUNE_CHILD" ]; then
        kill -TERM "$HEPPRUNE_CHILD" 2>/dev/null || true
        wait "$HEPPRUNE_CHILD" 2>/dev/null || true
    fi
    scontrol requeue "${SLURM_JOB_ID}"
    exit 0
}
trap hepprune_requeue USR1

# hepprune_run CMD...: run one stage in the background (bash runs a trap only
# between commands, and `wait` returns early when one fires) and return its status.
hepprune_run() {
    "$@" &
    HEPPRUNE_CHILD=$!
    local status=0
    while :; do
        wait "$HEPPRUNE_CHILD" && status=0 || status=$?
        if ! kill -0 "$HEPPRUNE_CHILD" 2>/dev/null; then
            break
        fi
    done
    HEPPRUNE_DONE=1
    return "$status"
}
