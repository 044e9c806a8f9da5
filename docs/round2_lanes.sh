#!/usr/bin/env bash
# Round 2's remaining commands (docs/findings_commands.sh, section "Round 2") on the two lanes of
# a 2-core machine, one thread each, from a checkout of the pinned commit (its source digest is
# part of the reuse keys, so every resume must run the same code). Resumable across machines:
# `checkpoint` commits each unfinished run directory under checkpoints/round2/, `restore` puts
# them back on a new machine, and the audit's --resume goes on from what is there.
#
#   docs/round2_lanes.sh setup        worktree at the pinned commit, checkpoints restored
#   docs/round2_lanes.sh start        both lanes, in the background (logs in $LOGS)
#   docs/round2_lanes.sh status       what each task is doing
#   docs/round2_lanes.sh checkpoint   copy unfinished runs into checkpoints/round2/ and commit
#   docs/round2_lanes.sh finish TASK  copy a finished run into results/, refresh its stored
#                                     summaries, drop its checkpoint, commit
#   docs/round2_lanes.sh stop         stop both lanes (each task resumes where it stopped)
# A running lane reads this file as it goes: edit a copy and mv it over, never in place.
set -euo pipefail
PIN=39c09aa
MAIN=$(cd "$(dirname "$0")/.." && pwd)
WT=${WT:-$MAIN/../wt-r2}
LOGS=${LOGS:-$MAIN/../logs}
CK=$MAIN/checkpoints/round2
REUSE=${STEERLENS_REUSE_DIR:-$HOME/.cache/steerlens/reuse}  # the reuse store (content-addressed)
CKR=$MAIN/checkpoints/reuse
PY=${PY:-$MAIN/.venv/bin/python}
TASKS="r2-1.5b-resid r2-0.5b-paper mit-r2-1.5b-resid r2-1.5b-paper confusion"
M15=qwen2.5-coder-1.5b-instruct
mkdir -p "$LOGS" "$CK" "$CKR"

audit_r2() {  # NAME ARGS...: as in docs/findings_commands.sh
  local out="results/findings-$1"; shift
  if [ -f "$out/config.json" ]; then
    "$PY" -m steerlens.audit "$@" --out "$out" --no-report --resume
  else
    "$PY" -m steerlens.audit "$@" --out "$out" --no-report
  fi
}

command_of() {  # TASK: the pre-registered command
  case $1 in
    r2-1.5b-resid) audit_r2 r2-1.5b-resid --preset standard --mediation --mediation-generated \
                     --model $M15 ;;
    r2-0.5b-paper) audit_r2 r2-0.5b-paper --preset standard --mediation --dose-unit paper \
                     --doses 1.5 --dose-sweep -1.5 1.5 ;;
    mit-r2-1.5b-resid) "$PY" -m steerlens.audit.mitigate results/findings-r2-1.5b-resid \
                     --vectors corrigible-neutral-HHH survival-instinct \
                     --attacks refusal_suppression ;;
    r2-1.5b-paper) audit_r2 r2-1.5b-paper --preset standard --mediation --model $M15 \
                     --dose-unit paper --doses 1.5 --dose-sweep -1.5 1.5 ;;
    confusion) (cd "$MAIN" && "$PY" benchmarks/harm_judge_confusion.py --cache /tmp/hj-all) ;;
  esac
}

needs() { case $1 in mit-r2-1.5b-resid) echo r2-1.5b-resid ;; esac; }
done_() { grep -qx "$1" "$CK/DONE" 2>/dev/null; }

next_task() {  # the first task neither done, nor claimed, nor waiting for the run it needs
  local t n
  for t in $TASKS; do
    done_ "$t" && continue
    n=$(needs "$t"); if [ -n "$n" ] && ! done_ "$n"; then continue; fi
    if mkdir "$LOGS/claim-$t" 2>/dev/null; then echo "$t"; return 0; fi
  done
  return 1
}

lane() {  # NAME: take tasks until none is left; a failed task stops the lane
  local t rc
  while t=$(next_task); do
    echo "$(date -u +%FT%TZ) lane $1 starts $t" >> "$LOGS/lanes.log"
    set +e
    (cd "$WT" && export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 && command_of "$t") \
      >> "$LOGS/$t.log" 2>&1
    rc=$?
    set -e
    echo "$(date -u +%FT%TZ) lane $1 $t exit $rc" >> "$LOGS/lanes.log"
    [ $rc -eq 0 ] || return $rc
    echo "$t" >> "$CK/DONE"
  done
}

case ${1:-status} in
  setup)
    [ -d "$WT" ] || git -C "$MAIN" worktree add "$WT" $PIN
    [ "$(git -C "$WT" rev-parse --short=7 HEAD)" = $PIN ] || { echo "$WT is not at $PIN"; exit 1; }
    for d in "$MAIN"/results/findings-r2-*; do  # finished runs (a mitigation reads its audit)
      [ -d "$WT/results/$(basename "$d")" ] || cp -r "$d" "$WT/results/"
    done
    if [ -d "$CKR" ]; then  # the reuse store's entries (a later run reuses an earlier run's cells)
      mkdir -p "$REUSE"
      for e in "$CKR"/*/*; do
        [ -d "$e" ] || continue
        r=$REUSE/${e#"$CKR"/}; [ -d "$r" ] || { mkdir -p "$(dirname "$r")"; cp -r "$e" "$r"; }
      done
    fi
    for d in "$CK"/findings-*; do  # a run the worktree lacks, or a mitigation it lacks
      w=$WT/results/$(basename "$d")
      if ! [ -f "$w/config.json" ]; then cp -r "$d" "$WT/results/"; echo "restored ${w##*/}"
      elif [ -d "$d/mitigations" ] && ! [ -d "$w/mitigations" ]; then
        cp -r "$d/mitigations" "$w/"; echo "restored ${w##*/}/mitigations"
      fi
    done ;;
  start)
    for l in A B; do
      if [ -f "$LOGS/lane-$l.pid" ] && kill -0 "$(cat "$LOGS/lane-$l.pid")" 2>/dev/null; then
        echo "lane $l is running (pid $(cat "$LOGS/lane-$l.pid")): stop it first"; exit 1
      fi
    done
    rm -rf "$LOGS"/claim-*
    for l in A B; do
      setsid nohup bash "$0" lane $l > "$LOGS/lane-$l.out" 2>&1 < /dev/null &
      echo $! > "$LOGS/lane-$l.pid"
    done
    echo started ;;
  lane) lane "$2" ;;
  status)
    tail -n 6 "$LOGS/lanes.log" 2>/dev/null || true
    echo "done: $(tr '\n' ' ' < "$CK/DONE" 2>/dev/null)"
    for t in $TASKS; do
      [ -f "$LOGS/$t.log" ] && echo "== $t: $(tail -c 400 "$LOGS/$t.log" | tr '\r' '\n' | tail -n 1)"
    done ;;
  checkpoint)
    for t in r2-1.5b-resid r2-0.5b-paper r2-1.5b-paper; do
      src="$WT/results/findings-$t"
      { [ -d "$src" ] && ! [ -d "$MAIN/results/findings-$t" ]; } || continue
      mkdir -p "$CK/findings-$t"
      cp -ru "$src/." "$CK/findings-$t/"
    done
    if [ -d "$REUSE" ]; then mkdir -p "$CKR"; cp -ru "$REUSE/." "$CKR/"; fi
    # a file or entry caught mid-write (atomic writes: .NAME.xxxx, published entries: .KEY.xxxx/)
    find "$CK" "$CKR" -mindepth 1 -name '.*' -prune -exec rm -rf {} +
    m=$WT/results/findings-r2-1.5b-resid/mitigations  # a mitigation under way on a finished run
    if [ -d "$m" ] && ! done_ mit-r2-1.5b-resid; then
      mkdir -p "$CK/findings-r2-1.5b-resid/mitigations"; cp -ru "$m/." "$CK/findings-r2-1.5b-resid/mitigations/"
    fi
    git -C "$MAIN" add checkpoints
    if git -C "$MAIN" diff --cached --quiet -- checkpoints; then echo "nothing to commit"; exit 0; fi
    git -C "$MAIN" commit -q -m "Round 2 checkpoint: unfinished run directories, $(date -u +%FT%TZ)" \
      -- checkpoints && echo committed ;;
  finish)
    t=$2; run=findings-${t#mit-}
    done_ "$t" || { echo "$t has not finished"; exit 1; }
    if [ "$t" = confusion ]; then  # it runs from MAIN (command_of): its file is MAIN's already
      f=steerlens/judges/weights/harm_confusion.json
      git -C "$MAIN" add "$f" checkpoints
      if git -C "$MAIN" diff --cached --quiet -- "$f" checkpoints; then echo "nothing to commit"; exit 0; fi
      git -C "$MAIN" commit -q -m "Round 2: the harm judge's all-rows calibration (run from main)" -- "$f" checkpoints
      echo committed; exit 0
    fi
    rm -rf "$MAIN/results/$run.tmp"
    cp -r "$WT/results/$run" "$MAIN/results/$run.tmp"
    if [[ $t != mit-* ]]; then rm -rf "$MAIN/results/$run.tmp/mitigations"; fi
    find "$MAIN/results/$run.tmp" -type f -name '.*' -delete
    rm -rf "$MAIN/results/$run"; mv "$MAIN/results/$run.tmp" "$MAIN/results/$run"
    (cd "$MAIN" && "$PY" -m steerlens.results.stored "results/$run")
    if [[ $t == mit-* ]]; then rm -rf "$CK/$run"  # a mitigation under way keeps its checkpoint
    else find "$CK/$run" -mindepth 1 -maxdepth 1 ! -name mitigations -exec rm -rf {} +
         rmdir "$CK/$run" 2>/dev/null || true; fi
    git -C "$MAIN" add "results/$run" checkpoints
    git -C "$MAIN" commit -q -m "Round 2: $t finished; committed from $PIN, stored summaries by the current rules" \
      -- "results/$run" checkpoints && echo committed ;;
  stop)  # each lane is its own process group (setsid): the lane, its task and the python
    for l in A B; do
      [ -f "$LOGS/lane-$l.pid" ] && kill -- "-$(cat "$LOGS/lane-$l.pid")" 2>/dev/null || true
    done ;;
  *) sed -n 2,15p "$0"; exit 2 ;;
esac
