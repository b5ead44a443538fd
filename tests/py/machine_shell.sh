#!/bin/sh
# tests/py/machine_shell.sh — a stand-in for ssh that makes "another machine" on this one,
# for tests/py/test_mpi_machines.py. mpirun runs it as `machine_shell.sh HOST COMMAND...`
# (its plm_rsh_agent) to start its daemon on HOST; the command runs in new UTS and mount
# namespaces, so the ranks of each host see their own host name and their own empty
# /dev/shm, as on separate machines, while the file system (model, data, run directory)
# is shared, as on a cluster. Between hosts Open MPI then talks over TCP, not shared memory.
#
# NPT_TEST_MACHINE_BIND="HOST:SOURCE:TARGET" bind-mounts SOURCE over TARGET on HOST only:
# one path that holds another file on one machine.
set -eu
host=$1
shift
exec unshare --uts --mount /bin/sh -c '
    set -eu
    host=$1
    shift
    mount -t tmpfs -o size=1g,mode=1777 machine-shm /dev/shm
    case "${NPT_TEST_MACHINE_BIND:-}" in
    "$host":*)
        spec=${NPT_TEST_MACHINE_BIND#"$host":}
        mount --bind "${spec%%:*}" "${spec#*:}"
        ;;
    esac
    hostname "$host"
    exec /bin/sh -c "$*"
' machine_shell "$host" "$@"
