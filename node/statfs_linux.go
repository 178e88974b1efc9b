package node

import (
	"os"
	"syscall"
)

// stRdonly is ST_RDONLY, statfs's flag for a read-only mount.
const stRdonly = 0x1

func statDisk(dir string) (DiskUsage, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return DiskUsage{}, err
	}
	return DiskUsage{
		Free:     int64(st.Bavail) * st.Bsize,
		ReadOnly: st.Flags&stRdonly != 0,
	}, nil
}

// allocate gives f size bytes of real blocks without writing them.
func allocate(f *os.File, size int64) error {
	return syscall.Fallocate(int(f.Fd()), 0, 0, size)
}
