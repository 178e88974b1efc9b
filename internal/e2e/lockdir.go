package e2e

import (
	"os"
	"os/exec"
	"testing"
)

// LockDir makes dir refuse new files, the way a data dir on a broken disk
// does, and returns the undo (also run when the test ends). Root ignores
// permissions, so for root it is chattr +i (the test is skipped where that
// is not supported); for anyone else chmod 0500.
func LockDir(tb testing.TB, dir string) (undo func()) {
	tb.Helper()
	if os.Geteuid() == 0 {
		if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
			tb.Skipf("cannot make %s immutable: %v %s", dir, err, out)
		}
		undo = func() { exec.Command("chattr", "-i", dir).Run() } //nolint:errcheck // what follows the undo checks it
	} else {
		if err := os.Chmod(dir, 0o500); err != nil {
			tb.Fatal(err)
		}
		undo = func() { os.Chmod(dir, 0o700) } //nolint:errcheck // what follows the undo checks it
	}
	tb.Cleanup(undo)
	return undo
}
