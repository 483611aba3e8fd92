#!/bin/bash
# efajob's ParallelCluster 3 OnNodeConfigured script (docs/deploy.md, "ParallelCluster").
#
#   efajob-node-configured.sh compute|head (--wheel URL|PATH | --index-url URL [--version V]) [options]
#
# compute: only on a node with EFA devices (PCI vendor 0x1d0f under
#          /sys/class/infiniband/*/device/vendor): efajob into its own virtualenv, the config,
#          the Slurm hooks in <slurm-etc>/scripts/{prolog,epilog}.d and the node daemon's unit.
#          A CPU node or a GPU node without EFA is left alone (one log line says so).
# head:    efajob into its virtualenv, the config, the job store on the shared path, the
#          dashboard's unit; with --prometheus, the scrape targets; with --cloudwatch, the
#          CloudWatch dashboard, put in the background.
#
# Never fatal to the node's bootstrap: ParallelCluster fails the node (and cluster creation)
# when this script exits non-zero, so every step logs its failure, the steps that depend on it
# are skipped, and the script always exits 0 with a summary of what it did and skipped. Every
# step is idempotent: run again, it changes nothing that is already right.
#
# Options (defaults in brackets):
#   --wheel URL|PATH     an efajob wheel: s3://bucket/key (copied with `aws s3 cp`) or a local
#                        path; its file name must stay the wheel's (efajob-0.1.0-py3-none-any.whl)
#   --index-url URL      install `efajob` from this package index instead (pip --index-url)
#   --version V          the version to install from the index [newest]
#   --venv DIR           the virtualenv [/opt/efajob/venv; under --root: ROOT/opt/efajob/venv]
#   --python PATH        the interpreter that creates the venv (>= 3.9) [python3]
#   --shared DIR         the shared filesystem; the job store is DIR/efajob
#                        [/opt/parallelcluster/shared]
#   --slurm-etc DIR      Slurm's etc dir; hooks go to DIR/scripts [/opt/slurm/etc]
#   --cluster NAME       the cluster name in records [Slurm's ClusterName]
#   --config FILE        use this existing config (e.g. one on the shared filesystem for every
#                        node) instead of writing /etc/efajob/config.toml; the hooks and units
#                        name it; the options that shape the written config are then ignored
#   --prometheus         compute: turn the node exporter on, bound to 0.0.0.0:9814 (the head
#                        node's Prometheus scrapes it; keep the port inside the cluster's
#                        security group); head: write /etc/prometheus/efajob-targets.json from
#                        Slurm's node list, and a cron job that keeps it current
#   --cloudwatch         publish node metrics to CloudWatch (compute) and put the CloudWatch
#                        dashboard (head); needs the IAM policies in this directory
#   --region R           CloudWatch region [the node's, from the instance metadata]
#   --log FILE           this script's log [/var/log/efajob-bootstrap.log]; also syslog and stderr
#   --root DIR           act on a fake root (tests, image builds): every path above is taken under
#                        DIR, the sysfs is DIR/sys, systemctl and syslog are left alone
#
# Exit status: always 0.

SCRIPT_NAME=efajob-node-configured
CONFIG=/etc/efajob/config.toml
CONFIG_MARK="# Written by efajob-node-configured.sh (ParallelCluster OnNodeConfigured)."
EFA_VENDOR=0x1d0f
PIP_TIMEOUT=600     # seconds: a wheel and its dependencies from a reachable index take < 60
S3_TIMEOUT=300
CMD_TIMEOUT=120     # efajob install ... writes a few files
TARGETS=/etc/prometheus/efajob-targets.json

ROLE="" WHEEL="" INDEX_URL="" VERSION="" VENV="" PYTHON=python3 OWN_CONFIG=0
SHARED=/opt/parallelcluster/shared SLURM_ETC=/opt/slurm/etc CLUSTER="" PROMETHEUS=0
CLOUDWATCH=0 REGION="" LOG="" ROOT="" IN_BACKGROUND=0
DONE=() SKIPPED=()

log() {
    local msg="$SCRIPT_NAME[$ROLE]: $*"
    printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$msg" >>"$LOG" 2>/dev/null
    # A background step's stderr is the log file already.
    [ "$IN_BACKGROUND" = 1 ] || printf '%s\n' "$msg" >&2
    if [ -z "$ROOT" ] && command -v logger >/dev/null 2>&1; then
        logger -t "$SCRIPT_NAME" -- "$msg" 2>/dev/null
    fi
    return 0
}

done_() { DONE+=("$1"); log "done: $1"; }
skip() { SKIPPED+=("$1"); log "skipped: $1"; }

join() {
    local out="" x
    for x in "$@"; do out="${out:+$out, }$x"; done
    printf '%s' "${out:-nothing}"
}

# Paths on the node as seen from here (under --root when given).
r() { printf '%s%s' "$ROOT" "$1"; }

parse_args() {
    # --log and --root first, so that even bad arguments are logged where they were asked to be.
    local prev=""
    for x in "$@"; do
        case "$prev" in --log) LOG=$x ;; --root) ROOT=${x%/} ;; esac
        prev=$x
    done
    ROLE=$1
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
            --wheel) WHEEL=$2; shift ;;
            --index-url) INDEX_URL=$2; shift ;;
            --version) VERSION=$2; shift ;;
            --venv) VENV=$2; shift ;;
            --python) PYTHON=$2; shift ;;
            --shared) SHARED=$2; shift ;;
            --slurm-etc) SLURM_ETC=$2; shift ;;
            --cluster) CLUSTER=$2; shift ;;
            --config) CONFIG=$2; OWN_CONFIG=1; shift ;;
            --prometheus) PROMETHEUS=1 ;;
            --cloudwatch) CLOUDWATCH=1 ;;
            --region) REGION=$2; shift ;;
            --log) LOG=$2; shift ;;
            --root) ROOT=${2%/}; shift ;;
            *) return 1 ;;
        esac
        [ $# -gt 0 ] || return 1  # an option that wants a value was given none
        shift
    done
    case "$ROLE" in compute|head) ;; *) return 1 ;; esac
    return 0
}

# --- EFA devices ----------------------------------------------------------------------------
count_efa() {
    local n=0 d v
    for d in "$(r /sys)"/class/infiniband/*; do
        [ -e "$d/device/vendor" ] || continue
        read -r v <"$d/device/vendor" 2>/dev/null || continue
        [ "$v" = "$EFA_VENDOR" ] && n=$((n + 1))
    done
    echo "$n"
}

count_gpus() {
    # NVIDIA's driver lists one directory per GPU; only said in the log line.
    local n=0 d
    for d in "$(r /proc)"/driver/nvidia/gpus/*; do [ -d "$d" ] && n=$((n + 1)); done
    echo "$n"
}

# --- the package ----------------------------------------------------------------------------
installed_version() {
    # The console script too: a venv whose pip step was cut short has no working efajob.
    [ -x "$VENV/bin/python3" ] && [ -x "$VENV/bin/efajob" ] || return 1
    "$VENV/bin/python3" -c 'import importlib.metadata as m; print(m.version("efajob"))' 2>/dev/null
}

fetch_wheel() {  # prints the local path of the wheel
    local dest
    case "$WHEEL" in
        s3://*)
            dest="$(r /var/tmp)/efajob-wheel"
            mkdir -p "$dest" || return 1
            if ! timeout "$S3_TIMEOUT" aws s3 cp --only-show-errors "$WHEEL" \
                    "$dest/${WHEEL##*/}" >>"$LOG" 2>&1; then
                log "aws s3 cp $WHEEL failed (see the lines above; the node's role needs s3:GetObject on it)"
                return 1
            fi
            echo "$dest/${WHEEL##*/}" ;;
        *)
            [ -f "$WHEEL" ] || { log "wheel $WHEEL: no such file"; return 1; }
            echo "$WHEEL" ;;
    esac
}

install_package() {
    local want have spec pyv
    if [ -n "$WHEEL" ]; then
        want=${WHEEL##*/}; want=${want#efajob-}; want=${want%%-*}
    else
        want=$VERSION
    fi
    have=$(installed_version)
    if [ -n "$have" ] && { [ -z "$want" ] || [ "$have" = "$want" ]; }; then
        log "efajob $have already in $VENV"
        return 0
    fi
    if [ ! -x "$VENV/bin/python3" ]; then
        # pyproject: requires-python >= 3.9; Amazon Linux 2's python3 is 3.7.
        pyv=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2]); sys.exit(sys.version_info < (3, 9))' 2>&1) || {
            log "$PYTHON is not Python >= 3.9 ($pyv): give --python"
            return 1
        }
        mkdir -p "$(dirname "$VENV")" && "$PYTHON" -m venv "$VENV" >>"$LOG" 2>&1 || {
            log "cannot create the virtualenv $VENV with $PYTHON"
            return 1
        }
    fi
    if [ -n "$WHEEL" ]; then
        spec=$(fetch_wheel) || return 1
        set -- "$spec"
    elif [ -n "$INDEX_URL" ]; then
        spec=efajob${VERSION:+==$VERSION}
        set -- --index-url "$INDEX_URL" "$spec"
    else
        log "neither --wheel nor --index-url given"
        return 1
    fi
    # --retries/--timeout: a dead index fails in seconds instead of minutes.
    if ! timeout "$PIP_TIMEOUT" "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check \
            --retries 1 --timeout 20 "$@" >>"$LOG" 2>&1; then
        log "pip install $* into $VENV failed (see the lines above)"
        return 1
    fi
    log "installed efajob $(installed_version) into $VENV"
    build_native
}

build_native() {
    # The sampler's C reader: a pure wheel ships only its source. Not fatal: without a
    # compiler or Python headers the sampler reads the same counters in Python.
    if out=$("$VENV/bin/efajob" install native 2>&1); then
        log "C reader: $out"
    else
        log "C reader not built, the sampler reads in Python: ${out#error: }"
    fi
}

# --- the config -----------------------------------------------------------------------------
render_config() {
    echo "$CONFIG_MARK"
    echo "# Edit it and remove the line above: the script then keeps it."
    [ -n "$CLUSTER" ] && echo "cluster = \"$CLUSTER\""
    echo "store = \"$SHARED/efajob\""
    echo "log_file = \"/var/log/efajob/efajob.log\""
    if [ -n "$ROOT" ]; then
        # The node's paths as this fake root holds them (tests run the hooks and daemon here).
        echo "sysfs_root = \"$ROOT/sys\""
    fi
    if [ "$PROMETHEUS" = 1 ]; then
        printf '\n[prometheus]\nenabled = true\nbind = "0.0.0.0"\n'
    fi
    if [ "$CLOUDWATCH" = 1 ]; then
        printf '\n[cloudwatch]\nenabled = true\n'
        [ -n "$REGION" ] && echo "region = \"$REGION\""
    fi
    return 0
}

write_config() {
    local path tmp
    path=$(r "$CONFIG")
    if [ "$OWN_CONFIG" = 1 ]; then
        [ -f "$path" ] || { log "--config $CONFIG: no such file"; return 1; }
        log "using the config $CONFIG (--config)"
        return 0
    fi
    if [ -f "$path" ] && [ "$(head -n 1 "$path")" != "$CONFIG_MARK" ]; then
        log "$CONFIG exists and was not written by this script: kept as it is"
        return 0
    fi
    mkdir -p "$(dirname "$path")" || return 1
    tmp="$path.tmp.$$"
    render_config >"$tmp" || { rm -f "$tmp"; return 1; }
    if [ -f "$path" ] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        log "$CONFIG unchanged"
        return 0
    fi
    mv -f "$tmp" "$path" || { rm -f "$tmp"; return 1; }
    log "wrote $CONFIG"
}

# --- efajob's own install commands (efajob/cli/install.py) -----------------------------------
efajob() {
    local out
    out=$(timeout "$CMD_TIMEOUT" "$VENV/bin/efajob" "$@" ${ROOT:+--root "$ROOT"} 2>&1)
    local rc=$?
    [ -n "$out" ] && printf '%s\n' "$out" >>"$LOG"
    [ $rc = 0 ] || log "efajob $1 $2 failed: $(printf '%s' "$out" | tail -n 1)"
    return $rc
}

enable_unit() {
    if [ -n "$ROOT" ]; then
        skip "systemctl enable --now $1 (--root)"
    elif [ ! -d /run/systemd/system ]; then
        skip "systemctl enable --now $1 (systemd is not running)"
    elif timeout "$CMD_TIMEOUT" systemctl daemon-reload >>"$LOG" 2>&1 &&
            timeout "$CMD_TIMEOUT" systemctl enable --now "$1" >>"$LOG" 2>&1; then
        done_ "started $1"
    else
        skip "starting $1 (systemctl failed, see $LOG)"
    fi
}

make_store() {
    local store
    store=$(r "$SHARED/efajob")
    # 0755: compute nodes write as root (ParallelCluster exports the shared dir with
    # no_root_squash); the dashboard (DynamicUser) only reads.
    mkdir -p "$store" && chmod 0755 "$store" && [ -w "$store" ] && touch "$store/.efajob-probe" &&
        rm -f "$store/.efajob-probe"
}

cloudwatch_dashboard_in_background() {
    # In the background: credentials, the metadata service or the endpoint may take long to
    # answer, and the head node's bootstrap must not wait for them. No terminal, no stdout:
    # the caller must not wait for this child's output either.
    (
        IN_BACKGROUND=1
        set -- cloudwatch dashboard --config "$(r "$CONFIG")" ${REGION:+--region "$REGION"}
        if out=$(timeout "$CMD_TIMEOUT" "$VENV/bin/efajob" "$@" 2>&1); then
            log "done: CloudWatch dashboard: $out"
        else
            log "failed: CloudWatch dashboard: $(printf '%s' "$out" | tail -n 1)"
        fi
    ) </dev/null >>"$LOG" 2>&1 &
    log "CloudWatch dashboard: being put in the background (pid $!); its result goes to $LOG"
}

prometheus_targets() {
    # The node exporters for the head node's Prometheus (slurm/prometheus/), rewritten every
    # minute from cron: dynamic nodes come and go. Not run under --root (no Slurm there).
    local cron
    cron=$(r /etc/cron.d/efajob-prometheus-targets)
    if mkdir -p "$(dirname "$cron")" "$(r "$(dirname "$TARGETS")")" &&
            printf '%s\n' "# Written by $SCRIPT_NAME.sh: Prometheus targets from Slurm (docs/prometheus.md)." \
                "* * * * * root $VENV/bin/efajob prometheus targets --config $CONFIG --out $TARGETS >/dev/null 2>&1" \
                >"$cron.tmp.$$" && mv -f "$cron.tmp.$$" "$cron"; then
        done_ "cron job for $TARGETS"
    else
        rm -f "$cron.tmp.$$"
        skip "cron job for $TARGETS (cannot write $cron)"
    fi
    if [ -n "$ROOT" ]; then
        skip "first $TARGETS (--root)"
    elif efajob prometheus targets --config "$CONFIG" --out "$TARGETS"; then
        done_ "$TARGETS"
    else
        skip "first $TARGETS (cron tries again every minute)"
    fi
}

# --- the roles ------------------------------------------------------------------------------
package_and_config() {
    if ! install_package; then
        skip "efajob package"
        return 1
    fi
    done_ "efajob $(installed_version) in $VENV"
    if ! write_config; then
        skip "config $CONFIG (cannot write it)"
        return 1
    fi
    done_ "config $CONFIG"
}

run_compute() {
    local n
    n=$(count_efa)
    if [ "$n" = 0 ]; then
        skip "everything: no EFA device (vendor $EFA_VENDOR) under /sys/class/infiniband, $(count_gpus) NVIDIA GPU(s): a CPU node or a GPU node without EFA"
        return
    fi
    log "$n EFA device(s)"
    if ! package_and_config; then
        skip "Slurm hooks, node daemon (no efajob to run)"
        return
    fi
    if efajob install hooks --slurm-scripts-dir "$SLURM_ETC/scripts" --config "$CONFIG" \
            --python "$VENV/bin/python3"; then
        done_ "Slurm hooks in $SLURM_ETC/scripts/prolog.d and epilog.d"
    else
        skip "Slurm hooks"
    fi
    if efajob install systemd --config "$CONFIG" --python "$VENV/bin/python3"; then
        done_ "efajob-node.service"
        enable_unit efajob-node.service
    else
        skip "node daemon unit"
    fi
}

run_head() {
    if make_store; then
        done_ "job store $SHARED/efajob"
    else
        skip "job store $SHARED/efajob (cannot create or write it)"
    fi
    if ! package_and_config; then
        skip "dashboard, CloudWatch dashboard (no efajob to run)"
        return
    fi
    if efajob install dashboard --config "$CONFIG" --python "$VENV/bin/python3"; then
        done_ "efajob-dashboard.service, efajob-index.service and .timer"
        enable_unit efajob-dashboard.service
        enable_unit efajob-index.timer
    else
        skip "dashboard unit"
    fi
    if [ "$PROMETHEUS" = 1 ]; then
        prometheus_targets
    else
        skip "Prometheus targets (no --prometheus)"
    fi
    if [ "$CLOUDWATCH" = 1 ]; then
        cloudwatch_dashboard_in_background
    else
        skip "CloudWatch dashboard (no --cloudwatch)"
    fi
}

main() {
    if ! parse_args "$@"; then
        ROLE=${ROLE:-?}
        LOG=${LOG:-$(r /var/log/efajob-bootstrap.log)}
        log "usage: $0 compute|head (--wheel URL|PATH | --index-url URL [--version V]) [--venv DIR] [--python PATH] [--shared DIR] [--slurm-etc DIR] [--cluster NAME] [--config FILE] [--prometheus] [--cloudwatch] [--region R] [--log FILE] [--root DIR]; got: $*"
        log "nothing done"
        return
    fi
    LOG=${LOG:-$(r /var/log/efajob-bootstrap.log)}
    VENV=${VENV:-$(r /opt/efajob/venv)}
    mkdir -p "$(dirname "$LOG")" 2>/dev/null
    log "start (args: $*)"
    if [ "$ROLE" = compute ]; then run_compute; else run_head; fi
    log "finished: done: $(join "${DONE[@]}"); skipped: $(join "${SKIPPED[@]}")"
}

main "$@"
exit 0
