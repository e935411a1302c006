#!/bin/bash
# Owns: PID 1 of the test VM (started by run.sh as init=; runs from the host's root filesystem,
# which the guest sees read-only over 9p). Mounts the kernel filesystems and cgroup2, loads the
# test driver, runs the command run.sh left in the results share, records its exit status and
# the kernel log there, and powers off. No network is configured: the guest has no network device.
# Nothing is mounted over the host's directories (the repository, the cargo target dir or the
# command may live anywhere, /tmp included; the guest sees them read-only): the guest's writable
# scratch space is a tmpfs on /run, with TMPDIR=/run/tmp and HOME=/run/home (set by run.sh).
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
bb=/bin/busybox
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs run /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir /run/results /run/home
mkdir -m 1777 /run/tmp
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results /run/results
R=/run/results
finish() {
	$bb dmesg >"$R/dmesg" 2>&1
	sync
	$bb reboot -f
}
trap finish EXIT
# shellcheck source=/dev/null # written by run.sh
. "$R/env"
echo "guest: kernel $(uname -r), up $(cut -d' ' -f1 /proc/uptime) s" >"$R/boot"
if [ -n "${DMEMTEST_KO:-}" ]; then
	# shellcheck disable=SC2086 # DMEMTEST_PARAMS is a list of module parameters
	if ! $bb insmod "$DMEMTEST_KO" $DMEMTEST_PARAMS >"$R/out" 2>&1; then
		echo "guest: insmod $DMEMTEST_KO $DMEMTEST_PARAMS failed" >>"$R/out"
		echo 125 >"$R/rc"
		exit
	fi
fi
cut -d' ' -f1 /proc/uptime >"$R/start"
cd "$GUEST_CWD" || cd /
rc=0
bash "$R/cmd" >"$R/out" 2>&1 </dev/null || rc=$?
cut -d' ' -f1 /proc/uptime >"$R/end"
echo "$rc" >"$R/rc"
