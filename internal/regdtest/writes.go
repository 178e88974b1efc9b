package regdtest

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regd/regd/internal/poll"
)

// WriteMonitor keeps registering a probe instance through one REST address
// and records the longest time between two accepted writes: the window in
// which the cluster refused or stalled writes during a failover. Each
// attempt gives up after 300 ms, so the resolution is not the store's 3 s
// timeout.
type WriteMonitor struct {
	stop, done chan struct{}
	mu         sync.Mutex
	ok         int
	maxGap     time.Duration
}

// StartWriteMonitor starts writing service "probe", instance id, through
// base (e.g. "http://127.0.0.1:8080") every 20 ms.
func StartWriteMonitor(base, id string) *WriteMonitor {
	w := &WriteMonitor{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		client := &http.Client{Timeout: 300 * time.Millisecond}
		last := time.Now()
		pace := time.NewTicker(20 * time.Millisecond)
		defer pace.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-pace.C:
			}
			req, _ := http.NewRequest(http.MethodPut, base+"/v1/services/probe/instances/"+id, strings.NewReader(`{"address":"127.0.0.1:1","ttl":60}`))
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
				continue
			}
			now := time.Now()
			w.mu.Lock()
			w.ok++
			w.maxGap = max(w.maxGap, now.Sub(last))
			w.mu.Unlock()
			last = now
		}
	}()
	return w
}

// Accepted is the number of writes accepted so far.
func (w *WriteMonitor) Accepted() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ok
}

// Finish waits (up to timeout) for one more accepted write, stops the
// monitor and returns the longest gap between accepted writes.
func (w *WriteMonitor) Finish(t testing.TB, timeout time.Duration) time.Duration {
	t.Helper()
	n := w.Accepted()
	poll.Until(t, timeout, "a write accepted after the failure", func() error {
		if w.Accepted() <= n {
			return fmt.Errorf("no write accepted since the failure")
		}
		return nil
	})
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.maxGap
}
