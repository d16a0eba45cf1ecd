#!/bin/sh
# Stratus guest context agent (busybox ash; inittab "once" action, stdout = serial console).
#
# 1. finds the NoCloud seed: an ISO9660 volume labelled "cidata" on a virtio disk
#    (/dev/vd*), mounts it read-only on /run/stratus/cidata;
# 2. applies meta-data (instance-id, local-hostname, public-keys, stratus-context),
#    network-config (version 1, one static interface matched by MAC) and the
#    ssh_authorized_keys of a "#cloud-config" user-data;
# 3. prints exactly one line "STRATUS-READY <instance-id> <ip-or-none>";
# 4. runs a "#!" user-data script in the background and prints
#    "STRATUS-USERDATA <instance-id> exit <code>" when it ends;
# 5. watches /sys/block forever and prints "STRATUS-BLOCK add|remove <dev>".
#
# Seed values are user-controlled: they are only ever expanded inside double
# quotes, never evaluated, and written to /etc/stratus/context shell-quoted.
#
# For tests on a build host the script can be sourced with STRATUS_AGENT_LIB=1
# (defines the functions, runs nothing) and STRATUS_AGENT_ROOT=<dir> (prefix
# of every file the functions write).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

R=${STRATUS_AGENT_ROOT:-}
RUN=$R/run/stratus
SEED=$RUN/cidata
ETC=$R/etc
ROOT_HOME=$R/root
CONTEXT_FILE=$ETC/stratus/context
AUTHORIZED_KEYS=$ROOT_HOME/.ssh/authorized_keys

INSTANCE_ID=none
LOCAL_HOSTNAME=
IP=none
SSH_KEYS=0

log() {
    echo "stratus-agent: $*"
}

# unquote VALUE: sets REPLY to VALUE without YAML single quotes ('' -> ') or
# double quotes (no escapes supported; Stratus never writes them).
unquote() {
    _v=$1
    REPLY=
    case "$_v" in
    \'*\')
        _v=${_v#\'}
        _v=${_v%\'}
        while :; do
            case "$_v" in
            *\'\'*)
                REPLY=$REPLY${_v%%\'\'*}\'
                _v=${_v#*\'\'}
                ;;
            *)
                REPLY=$REPLY$_v
                break
                ;;
            esac
        done
        ;;
    \"*\")
        _v=${_v#\"}
        REPLY=${_v%\"}
        ;;
    *)
        REPLY=$_v
        ;;
    esac
}

# shquote VALUE: sets REPLY to VALUE as one POSIX-shell single-quoted word.
shquote() {
    _v=$1
    REPLY=\'
    while :; do
        case "$_v" in
        *\'*)
            REPLY=$REPLY${_v%%\'*}\'\\\'\'
            _v=${_v#*\'}
            ;;
        *)
            REPLY=$REPLY$_v\'
            break
            ;;
        esac
    done
}

# find_cidata: prints the /dev node of the ISO9660 volume labelled cidata.
find_cidata() {
    for _sys in /sys/block/vd*; do
        [ -e "$_sys" ] || continue
        _dev=/dev/${_sys##*/}
        # ISO9660 primary volume descriptor: sector 16 (2 KiB sectors),
        # "CD001" at byte 1, volume identifier at bytes 40..71.
        _magic=$(dd if="$_dev" bs=1 skip=32769 count=5 2>/dev/null)
        [ "$_magic" = CD001 ] || continue
        _label=$(dd if="$_dev" bs=1 skip=32808 count=32 2>/dev/null)
        _label=${_label%% *}
        case "$_label" in
        cidata | CIDATA)
            echo "$_dev"
            return 0
            ;;
        esac
    done
    return 1
}

mount_cidata() {
    _tries=0
    while [ $_tries -lt 50 ]; do
        if _dev=$(find_cidata); then
            if mount -t iso9660 -o ro,nosuid,nodev,noexec "$_dev" "$SEED"; then
                return 0
            fi
            log "cannot mount $_dev"
            return 1
        fi
        _tries=$((_tries + 1))
        sleep 0.1
    done
    log "no cidata volume found"
    return 1
}

valid_word() {
    # instance ids and hostnames end up on protocol lines: no blanks, no specials
    case "$1" in
    "" | *[!A-Za-z0-9._-]*) return 1 ;;
    esac
    return 0
}

valid_key() {
    case "$1" in
    "" | [0-9]* | *[!A-Za-z0-9_]*) return 1 ;;
    esac
    return 0
}

add_ssh_key() {
    [ -n "$1" ] || return 0
    mkdir -p "$ROOT_HOME/.ssh"
    chmod 0700 "$ROOT_HOME/.ssh"
    printf '%s\n' "$1" >> "$AUTHORIZED_KEYS"
    chmod 0600 "$AUTHORIZED_KEYS"
    SSH_KEYS=$((SSH_KEYS + 1))
}

apply_meta_data() {
    _file=$SEED/meta-data
    [ -r "$_file" ] || return 0
    _section=
    : > "$CONTEXT_FILE"
    chmod 0644 "$CONTEXT_FILE"
    while IFS= read -r _line || [ -n "$_line" ]; do
        case "$_line" in
        "instance-id: "*)
            _section=
            unquote "${_line#instance-id: }"
            if valid_word "$REPLY"; then INSTANCE_ID=$REPLY; else log "bad instance-id"; fi
            ;;
        "local-hostname: "*)
            _section=
            unquote "${_line#local-hostname: }"
            if valid_word "$REPLY"; then LOCAL_HOSTNAME=$REPLY; else log "bad local-hostname"; fi
            ;;
        "public-keys:"*)
            _section=keys
            ;;
        "stratus-context:"*)
            _section=context
            ;;
        "  - "*)
            if [ "$_section" = keys ]; then
                unquote "${_line#  - }"
                add_ssh_key "$REPLY"
            fi
            ;;
        "  "*": "*)
            if [ "$_section" = context ]; then
                _rest=${_line#  }
                _key=${_rest%%: *}
                unquote "${_rest#*: }"
                if valid_key "$_key"; then
                    shquote "$REPLY"
                    printf '%s=%s\n' "$_key" "$REPLY" >> "$CONTEXT_FILE"
                else
                    log "ignoring bad context key"
                fi
            fi
            ;;
        "" | "#"*) ;;
        *)
            _section=
            ;;
        esac
    done < "$_file"
}

apply_hostname() {
    [ -n "$LOCAL_HOSTNAME" ] || return 0
    hostname "$LOCAL_HOSTNAME"
    printf '%s\n' "$LOCAL_HOSTNAME" > "$ETC/hostname"
}

write_hosts() {
    _name=$(hostname)
    {
        echo "127.0.0.1 localhost"
        if [ "$IP" != none ]; then
            echo "$IP $_name"
        else
            echo "127.0.1.1 $_name"
        fi
    } > "$ETC/hosts"
}

# iface_by_mac MAC: prints the interface name whose address is MAC.
iface_by_mac() {
    _want=$(echo "$1" | tr 'A-F' 'a-f')
    _tries=0
    while [ $_tries -lt 30 ]; do
        for _n in /sys/class/net/*; do
            [ -r "$_n/address" ] || continue
            IFS= read -r _a < "$_n/address"
            if [ "$_a" = "$_want" ]; then
                echo "${_n##*/}"
                return 0
            fi
        done
        _tries=$((_tries + 1))
        sleep 0.1
    done
    return 1
}

apply_network() {
    _file=$SEED/network-config
    [ -r "$_file" ] || return 0
    _mac= _addr= _gw= _dns= _in_dns=
    while IFS= read -r _line || [ -n "$_line" ]; do
        # strip leading blanks
        _l=${_line#"${_line%%[! ]*}"}
        case "$_l" in
        "mac_address: "*)
            _in_dns=
            unquote "${_l#mac_address: }"
            _mac=$REPLY
            ;;
        "address: "*)
            _in_dns=
            unquote "${_l#address: }"
            _addr=$REPLY
            ;;
        "gateway: "*)
            _in_dns=
            unquote "${_l#gateway: }"
            _gw=$REPLY
            ;;
        "dns_nameservers:"*)
            _in_dns=1
            ;;
        "- "*)
            if [ -n "$_in_dns" ]; then
                unquote "${_l#- }"
                _dns="$_dns $REPLY"
            fi
            ;;
        *)
            _in_dns=
            ;;
        esac
    done < "$_file"
    if [ -z "$_mac" ] || [ -z "$_addr" ]; then
        log "network-config without mac_address/address: no network"
        return 0
    fi
    if ! _if=$(iface_by_mac "$_mac"); then
        log "no interface with MAC $_mac"
        return 0
    fi
    case "$_addr" in
    */*) ;;
    *) _addr=$_addr/32 ;;
    esac
    ip link set dev "$_if" up || return 0
    if ! ip addr add "$_addr" dev "$_if"; then
        log "cannot set address on $_if"
        return 0
    fi
    IP=${_addr%/*}
    if [ -n "$_gw" ]; then
        ip route add default via "$_gw" dev "$_if" || log "cannot add default route"
    fi
    : > "$ETC/resolv.conf"
    for _d in $_dns; do
        echo "nameserver $_d" >> "$ETC/resolv.conf"
    done
}

# apply_cloud_config: "ssh_authorized_keys:" list items of a #cloud-config user-data.
apply_cloud_config() {
    _in_keys=
    while IFS= read -r _line || [ -n "$_line" ]; do
        case "$_line" in
        "ssh_authorized_keys:"*)
            _in_keys=1
            ;;
        " "*"- "* | "- "*)
            if [ -n "$_in_keys" ]; then
                _l=${_line#"${_line%%[! ]*}"}
                unquote "${_l#- }"
                add_ssh_key "$REPLY"
            fi
            ;;
        " "* | "" | "#"*) ;;
        *)
            _in_keys=
            ;;
        esac
    done < "$1"
}

USER_SCRIPT=

prepare_user_data() {
    _file=$SEED/user-data
    [ -s "$_file" ] || return 0
    IFS= read -r _first < "$_file"
    case "$_first" in
    "#!"*)
        USER_SCRIPT=$RUN/user-data
        cp "$_file" "$USER_SCRIPT"
        chmod 0700 "$USER_SCRIPT"
        ;;
    "#cloud-config"*)
        apply_cloud_config "$_file"
        ;;
    *)
        log "user-data format not supported, ignored"
        ;;
    esac
}

run_user_script() {
    (
        cd "$ROOT_HOME" || exit 1
        "$USER_SCRIPT" < /dev/null
        echo "STRATUS-USERDATA $INSTANCE_ID exit $?"
    ) &
}

# watch_block: report whole-disk block devices appearing and disappearing.
watch_block() {
    _prev=" "
    for _b in /sys/block/*; do
        [ -e "$_b" ] && _prev="$_prev${_b##*/} "
    done
    while :; do
        sleep 0.2
        _cur=" "
        for _b in /sys/block/*; do
            [ -e "$_b" ] && _cur="$_cur${_b##*/} "
        done
        [ "$_cur" = "$_prev" ] && continue
        for _b in $_cur; do
            case "$_prev" in
            *" $_b "*) ;;
            *) echo "STRATUS-BLOCK add $_b" ;;
            esac
        done
        for _b in $_prev; do
            case "$_cur" in
            *" $_b "*) ;;
            *) echo "STRATUS-BLOCK remove $_b" ;;
            esac
        done
        _prev=$_cur
    done
}

main() {
    mkdir -p "$RUN" "$SEED" "$ETC/stratus" "$ROOT_HOME"
    chmod 0700 "$ROOT_HOME"
    if mount_cidata; then
        apply_meta_data
        printf '%s\n' "$INSTANCE_ID" > "$RUN/instance-id"
        apply_hostname
        apply_network
        prepare_user_data
        log "installed $SSH_KEYS ssh key(s)"
    fi
    write_hosts
    echo "STRATUS-READY $INSTANCE_ID $IP"
    if [ -n "$USER_SCRIPT" ]; then
        run_user_script
    fi
    watch_block
}

[ -n "${STRATUS_AGENT_LIB:-}" ] || main
