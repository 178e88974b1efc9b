//go:build unix && !linux

package cli

import "syscall"

// parentDeathSignal: only Linux has PR_SET_PDEATHSIG.
func parentDeathSignal(*syscall.SysProcAttr) {}
