#!/usr/bin/env bash
# Run `octop2p doctor`, a job and a hostile job under the hardening of octop2p-node.service,
# in a throwaway systemd-nspawn container, on a machine where systemd is not PID 1 (a CI
# runner, a build container). As root, with systemd-container installed:
#
#   packaging/systemd/check-in-nspawn.sh [PREFIX]     # PREFIX: an octop2p install, /opt/octop2p
#
# The container boots this machine's /usr on an empty, volatile root (nothing it writes
# is kept) with PREFIX and the checkout bound read-only. The unit it runs is the real
# octop2p-node.service with only these changes: Type=oneshot, the commands below instead
# of `octop2p node`, output appended to files in OUT, and power-off when done.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
prefix="${1:-/opt/octop2p}"
out="$(mktemp -d /tmp/octop2p-nspawn.XXXXXX)"
chmod 755 "$out"  # the service's dynamic user reads the snoop job from it
unit="$out/octop2p-check.service"
bin="$prefix/bin/octop2p"
[ -x "$bin" ] || { echo "no octop2p at $bin: install it there first (docs/install.md)" >&2; exit 2; }

# A job that tries to read a file outside its folder: the sandbox must refuse it.
mkdir -p "$out/snoop"
printf 'def splitter():\n    yield 1\n' >"$out/snoop/Split.py"
printf 'def process(f):\n    return open("/etc/machine-id").read()\n' >"$out/snoop/Process.py"
printf 'def merger(r, d):\n    pass\n' >"$out/snoop/Merge.py"

sed -e "s|^Type=simple|Type=oneshot|" \
    -e "/^Restart/d" \
    -e "s|^After=network-online.target|&\nSuccessAction=poweroff-force\nFailureAction=poweroff-force|" \
    -e "s|^ExecStart=.*|\
ExecStart=$bin doctor\n\
ExecStart=/bin/sh -c 'id; grep -E \"^(NoNewPrivs\|CapBnd\|Seccomp)\" /proc/self/status; chrt -p \$\$\$\$; ionice -p \$\$\$\$; echo nice \$(nice)'\n\
ExecStart=$bin run $repo/examples/primes -w 2 -o %S/octop2p/primes\n\
ExecStart=/bin/sh -c 'echo primes: \$(cat %S/octop2p/primes/count.txt)'\n\
ExecStart=-$bin run /mnt/out/snoop -w 1 -o %S/octop2p/snoop\n\
ExecStart=-/usr/bin/timeout -s TERM 8 $bin node --listen 127.0.0.1:0 --donate -v\n\
StandardOutput=append:/mnt/out/output.txt\n\
StandardError=append:/mnt/out/output.txt|" \
    "$here/octop2p-node.service" >"$unit"

# nspawn of systemd 252 (Debian 12) filters system calls itself and does not yet know
# Landlock's: allow them, or the container, not the unit, takes Landlock away.
timeout 300 systemd-nspawn --quiet --register=no --keep-unit -D / --volatile=yes \
    --private-network \
    --system-call-filter="landlock_create_ruleset landlock_add_rule landlock_restrict_self" \
    --bind-ro="$prefix" --bind-ro="$repo" --bind="$out:/mnt/out" \
    --bind-ro="$unit:/etc/systemd/system/octop2p-check.service" \
    --bind-ro="$here/octop2p.sysusers:/etc/sysusers.d/octop2p.conf" \
    -b -- systemd.unit=octop2p-check.service systemd.firstboot=off \
    systemd.mask=systemd-networkd-wait-online.service >"$out/boot.log" 2>&1 || true
cat "$out/output.txt"
echo "(files kept in $out)"
