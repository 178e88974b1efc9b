//go:build unix

package main

import "syscall"

// fileLimit is the process's soft limit of open files. Go raises it to the
// hard limit when the program starts (since Go 1.19), so it is already as
// high as this process may make it.
func fileLimit() (uint64, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	return uint64(rl.Cur), true
}
