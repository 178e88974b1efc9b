//go:build !unix

package cli

import (
	"os"
	"os/exec"
	"syscall"
)

func childAttr() *syscall.SysProcAttr { return nil }

func signalChild(cmd *exec.Cmd, sig os.Signal) { _ = cmd.Process.Signal(sig) }

func signalNumber(os.Signal) int { return 0 }

func exitStatus(ps *os.ProcessState) int { return ps.ExitCode() }
