//go:build unix

package cli

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
)

// childAttr puts regd run's command in a process group of its own: a
// terminal's Ctrl-C reaches regd run's group only, and regd run passes it
// on, so the command gets each signal once. On Linux the command also
// gets SIGTERM if regd run dies (parentDeathSignal).
func childAttr() *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	parentDeathSignal(a)
	return a
}

// signalChild sends sig to the command's process group: what a terminal
// does, so that a shell's children get it too.
func signalChild(cmd *exec.Cmd, sig os.Signal) {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return
	}
	if err := syscall.Kill(-cmd.Process.Pid, s); errors.Is(err, syscall.ESRCH) {
		_ = cmd.Process.Signal(s) // the group is gone; the process may not be
	}
}

func signalNumber(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return int(s)
	}
	return 0
}

// exitStatus is the command's exit code, or 128+N when signal N ended it,
// as shells report it.
func exitStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
