#!/usr/bin/env bash
# local-slurm.sh - a private one-node Slurm cluster (munged, slurmctld, slurmd)
# for takler's Slurm runner tests.
#
#   scripts/local-slurm.sh start    install if missing, configure, start, wait
#                                   until a first job has run; prints the
#                                   `export` lines on stdout, progress on stderr:
#                                       eval "$(scripts/local-slurm.sh start)"
#   scripts/local-slurm.sh stop     cancel queued jobs, stop the daemons
#   scripts/local-slurm.sh status   exit 0 if the cluster answers, 1 if not
#   scripts/local-slurm.sh env      print the `export` lines only
#
# Needs root. All state lives in one directory; nothing is killed by name, only
# pids from our own pid files whose command line names our own files.
#
# Things that bite when doing this by hand, and what this script does:
#   - Slurm's commands read /etc/slurm/slurm.conf unless SLURM_CONF says
#     otherwise: every command here and in the printed env uses SLURM_CONF.
#   - slurmctld and slurmd fork and the parent exits 0 even when the daemon
#     dies a moment later (bad config, port taken): readiness is checked by
#     asking the daemons, never by the exit code of the start command.
#   - the node can look "idle" from state saved by an earlier run before this
#     slurmd has registered: we also compare slurmd's boot time with the one
#     slurmctld recorded.
#   - the first job after a start can sit PENDING for seconds while the node
#     finishes registering: `start` returns only after `sbatch --wrap true`
#     has completed.
#   - a slurmctld killed uncleanly leaves state that, when recovered, re-runs
#     jobs that had finished: then we start from an empty state.
#   - munged refuses a socket whose parent directories are not world-executable.
#
# Environment knobs:
#   TAKLER_SLURM_DIR       state, config and logs   (default /tmp/takler-slurm)
#   TAKLER_SLURM_PORT      slurmctld port; slurmd uses PORT+1 (default 16917)
#   TAKLER_SLURM_CPUS      CPUs the node advertises (default: nproc)
#   TAKLER_SLURM_MIN_JOB_AGE  seconds a finished job stays visible (default 300)
#   TAKLER_SLURM_WAIT      seconds to wait for each readiness step (default 60)
set -euo pipefail

DIR=${TAKLER_SLURM_DIR:-/tmp/takler-slurm}
PORT=${TAKLER_SLURM_PORT:-16917}
CPUS=${TAKLER_SLURM_CPUS:-$(nproc)}
MIN_JOB_AGE=${TAKLER_SLURM_MIN_JOB_AGE:-300}
WAIT=${TAKLER_SLURM_WAIT:-60}
NODE=$(hostname -s)
CONF=$DIR/slurm.conf
SOCK=$DIR/munge/munge.socket
export SLURM_CONF=$CONF

say() { echo "[local-slurm] $*" >&2; }
fail() { say "error: $*"; exit 1; }

print_env() {
  echo "export SLURM_CONF=$CONF"
}

# ours PID PATTERN: PID is alive, not a zombie, and its command line has PATTERN
ours() {
  local pid=$1 pat=$2 state
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pat"
}

# running PIDFILE PATTERN: prints the pid when the pid file names a live daemon of ours
running() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  ours "$pid" "$2" || return 1
  echo "$pid"
}

# until_ok SECONDS WHAT CMD...: retry CMD every 0.2 s until it succeeds
until_ok() {
  local end=$(( $(date +%s) + $1 )) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || { say "gave up after ${WAIT}s waiting for $what"; return 1; }
    sleep 0.2
  done
}

dump_logs() {
  local f
  for f in "$DIR/munged.log" "$DIR/slurmctld.log" "$DIR/slurmd.log"; do
    [ -f "$f" ] || continue
    echo "---- last lines of $f" >&2
    tail -n 20 "$f" >&2
  done
}

install_if_missing() {
  local missing=() c
  for c in munged mungekey munge slurmctld slurmd sbatch squeue scontrol sinfo scancel sacct; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "missing ${missing[*]}: installing Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >&2
}

write_config() {
  local mem_mb
  mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 2048 ))
  cat > "$CONF.tmp" <<EOF
# written by takler's scripts/local-slurm.sh: one node, no cgroups, no slurmdbd
ClusterName=takler
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$(( PORT + 1 ))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=$MIN_JOB_AGE
KillWait=5
OverTimeLimit=0
InactiveLimit=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
}

start_munge() {
  [ -s "$DIR/munge.key" ] || mungekey --create --keyfile="$DIR/munge.key" --bits=1024 >&2
  chmod 600 "$DIR/munge.key"
  if running "$DIR/munged.pid" "$SOCK" >/dev/null; then
    say "munged already running"
  else
    say "starting munged"
    munged --key-file="$DIR/munge.key" --socket="$SOCK" --pid-file="$DIR/munged.pid" \
      --log-file="$DIR/munged.log" --seed-file="$DIR/munged.seed" \
      || { dump_logs; fail "munged did not start"; }
  fi
  munge_round_trip() { munge -n -S "$SOCK" | unmunge -S "$SOCK"; }
  until_ok "$WAIT" "a munge round trip" munge_round_trip || { dump_logs; fail "munge does not work"; }
}

# Each readiness probe returns 0 early when the daemon has died, and records it.
died=""
ctld_ready() {
  running "$DIR/slurmctld.pid" "$CONF" >/dev/null || { sleep 0.5; running "$DIR/slurmctld.pid" "$CONF" >/dev/null; } \
    || { died=slurmctld; return 0; }
  scontrol ping | grep -q 'is UP'
}

resumed=0
node_ready() {
  local booted seen state
  running "$DIR/slurmd.pid" "$CONF" >/dev/null || { sleep 0.5; running "$DIR/slurmd.pid" "$CONF" >/dev/null; } \
    || { died=slurmd; return 0; }
  booted=$(scontrol show slurmd 2>/dev/null | sed -n 's/^Boot time *= *//p')
  seen=$(scontrol show node "$NODE" -o 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2)
  [ -n "$booted" ] && [ "$booted" = "$seen" ] || return 1
  state=$(sinfo -h -n "$NODE" -o '%t' 2>/dev/null | head -n1)
  case "$state" in
    idle|mix|alloc|comp) return 0 ;;
    drain*|drng*|down*|fail*)
      # left down or drained by an earlier unclean stop
      if [ $resumed = 0 ]; then
        resumed=1
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
      fi ;;
  esac
  return 1
}

first_job_done() {
  local state
  state=$(scontrol show job "$1" -o 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
  case "$state" in
    COMPLETED) return 0 ;;
    PENDING|CONFIGURING|RUNNING|COMPLETING|"") return 1 ;;
    *) died="first job ($state)"; return 0 ;;
  esac
}

do_start() {
  [ "$(id -u)" = 0 ] || fail "must run as root"
  install_if_missing
  mkdir -p "$DIR/munge" "$DIR/state" "$DIR/spool"
  chmod 755 "$DIR" "$DIR/munge"
  chmod 700 "$DIR/state" "$DIR/spool"

  local ctld_up=0
  running "$DIR/slurmctld.pid" "$CONF" >/dev/null && ctld_up=1
  if [ $ctld_up = 0 ] && [ -s "$DIR/slurmctld.pid" ]; then
    say "slurmctld was not stopped cleanly last time: starting from an empty state"
    rm -rf "${DIR:?}/state" "${DIR:?}/spool" "$DIR/jobcomp.txt" "$DIR/slurmctld.pid"
    mkdir -p "$DIR/state" "$DIR/spool"
    chmod 700 "$DIR/state" "$DIR/spool"
  fi

  start_munge
  # Never rewrite the config of a running cluster.
  [ $ctld_up = 1 ] || write_config

  if [ $ctld_up = 1 ]; then
    say "slurmctld already running"
  else
    say "starting slurmctld"
    slurmctld -f "$CONF" || { dump_logs; fail "slurmctld did not start"; }
  fi
  until_ok "$WAIT" "slurmctld to answer" ctld_ready || { dump_logs; fail "slurmctld not answering"; }
  [ -z "$died" ] || { dump_logs; fail "$died exited"; }

  if running "$DIR/slurmd.pid" "$CONF" >/dev/null; then
    say "slurmd already running"
  else
    say "starting slurmd"
    slurmd -f "$CONF" -N "$NODE" || { dump_logs; fail "slurmd did not start"; }
  fi
  until_ok "$WAIT" "node $NODE to register" node_ready || { sinfo -N -l >&2 || true; dump_logs; fail "node not ready"; }
  [ -z "$died" ] || { dump_logs; fail "$died exited"; }

  local job
  job=$(sbatch --parsable --job-name=takler-warmup --output=/dev/null --wrap true) \
    || { dump_logs; fail "sbatch of the first job failed"; }
  job=${job%%;*}
  until_ok "$WAIT" "first job $job to complete" first_job_done "$job" \
    || { scontrol show job "$job" >&2 || true; dump_logs; fail "first job did not run"; }
  [ -z "$died" ] || { dump_logs; fail "$died"; }
  say "ready: node $NODE, $CPUS CPUs, slurmctld port $PORT, config $CONF"
  print_env
}

stop_daemon() {  # stop_daemon NAME PIDFILE PATTERN
  local pid
  if ! pid=$(running "$2" "$3"); then
    say "$1 not running"
    rm -f "$2"
    return 0
  fi
  say "stopping $1 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    ours "$pid" "$3" || { rm -f "$2"; return 0; }
    sleep 0.2
  done
  # The pid file stays: the next start then knows the stop was unclean.
  say "$1 still alive after 20 s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

do_stop() {
  local jobs
  if [ -f "$CONF" ] && running "$DIR/slurmctld.pid" "$CONF" >/dev/null; then
    jobs=$(squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ') || jobs=""
    if [ -n "${jobs// /}" ]; then
      say "cancelling jobs $jobs"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for _ in $(seq 100); do
        [ -z "$(squeue -h -o '%A' 2>/dev/null)" ] && break
        sleep 0.2
      done
    fi
  fi
  # A job step outliving slurmd would be requeued on the next start.
  stop_daemon slurmd "$DIR/slurmd.pid" "$CONF"
  stop_daemon slurmctld "$DIR/slurmctld.pid" "$CONF"
  stop_daemon munged "$DIR/munged.pid" "$SOCK"
  say "stopped"
}

do_status() {
  local name pf pat pid ok=0
  for name in munged slurmctld slurmd; do
    pf=$DIR/$name.pid
    pat=$CONF
    [ $name = munged ] && pat=$SOCK
    if pid=$(running "$pf" "$pat"); then
      say "$name running (pid $pid)"
    else
      say "$name not running"
      ok=1
    fi
  done
  if [ $ok = 0 ] && command -v squeue >/dev/null 2>&1 && squeue -h >/dev/null 2>&1; then
    sinfo >&2 || true
    return 0
  fi
  return 1
}

case "${1:-}" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
