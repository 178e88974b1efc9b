package cli

import "syscall"

// parentDeathSignal asks Linux to send the command SIGTERM when regd run
// dies without passing a signal on (SIGKILL, a crash): its instance is no
// longer kept alive, so it should stop too. (PR_SET_PDEATHSIG; it is tied
// to the thread that started the command, which the Go runtime keeps.)
func parentDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGTERM }
