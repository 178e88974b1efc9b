// Package syncbuf is a byte buffer that goroutines may write and read at
// once: what a test captures of a process's output (written by os/exec's
// copying goroutines) or of a logger (written by etcd's goroutines, also
// after the test returned, which is why tests collect logs here rather
// than in testing.T), while the test reads it. It is test-only.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer behind a mutex. The zero value is empty and
// ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// Sync does nothing: with it a Buffer is a zapcore.WriteSyncer.
func (b *Buffer) Sync() error { return nil }

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Tail is the last n bytes written so far, or all of them when fewer.
func (b *Buffer) Tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.b.Bytes()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return string(s)
}
