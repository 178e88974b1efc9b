package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/regd/regd/node"
)

// PrepareDataDir creates dir (and its parents) if needed and proves that a
// file can be written there, so that a bad data dir is found before etcd
// bootstraps into it. A disk filled to the last byte under a running member
// gets its reserve released first (node.ReleaseReserve): that is what the
// reserve is for. The error says why the dir is unusable, without the
// path; callers name it.
func PrepareDataDir(dir string) error {
	if dir == "" {
		return errors.New("must not be empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("not writable: %w", err)
	}
	err := node.ProbeDataDir(dir)
	if errors.Is(err, syscall.ENOSPC) && node.ReleaseReserve(dir) {
		err = node.ProbeDataDir(dir)
	}
	if err != nil {
		return fmt.Errorf("not writable: %w", err)
	}
	return nil
}

// HasMember reports whether dir holds an etcd member's data: a data dir
// that does and cannot be written is a broken disk under a member (wait for
// it, WaitForDataDir); one that does not is a fresh start, where a wrong
// path is likelier (fail).
func HasMember(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, "member"))
	return err == nil && fi.IsDir()
}
