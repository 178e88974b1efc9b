package syncbuf_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/regd/regd/internal/syncbuf"
)

func TestConcurrentWritesAllKept(t *testing.T) {
	var b syncbuf.Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("x\n"))
				_ = b.String() // a reader at the same time: -race checks it
			}
		})
	}
	wg.Wait()
	if n := strings.Count(b.String(), "x\n"); n != 800 {
		t.Fatalf("%d lines, want 800", n)
	}
}

func TestTail(t *testing.T) {
	var b syncbuf.Buffer
	b.Write([]byte("hello, world"))
	if got := b.Tail(5); got != "world" {
		t.Errorf("Tail(5) = %q", got)
	}
	if got := b.Tail(100); got != "hello, world" {
		t.Errorf("Tail(100) = %q", got)
	}
}
