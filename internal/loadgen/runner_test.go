package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunCountBound(t *testing.T) {
	var calls atomic.Int64
	r, err := Run(context.Background(), Config{Concurrency: 4, Count: 100}, func(ctx context.Context, w int, seq int64) (int, error) {
		calls.Add(1)
		if seq%10 == 0 {
			return 0, &StatusError{Code: 503}
		}
		return 0, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 100 {
		t.Fatalf("%d calls, want 100", calls.Load())
	}
	s := FromResult(r, nil)
	if s.Ops != 90 || s.Errors["503"] != 10 || s.ErrorString() != "503:10" {
		t.Fatalf("ops %d errors %v", s.Ops, s.Errors)
	}
}

func TestRunDurationBoundWithWarmupAndKinds(t *testing.T) {
	start := time.Now()
	kinds := []string{"a", "b"}
	r, err := Run(context.Background(), Config{Concurrency: 2, Duration: 100 * time.Millisecond, Warmup: 50 * time.Millisecond, Kinds: kinds},
		func(ctx context.Context, w int, seq int64) (int, error) {
			time.Sleep(time.Millisecond) // the operation's own work: p50 is checked against it
			return int(seq % 2), nil
		})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if took < 150*time.Millisecond || took > 2*time.Second {
		t.Fatalf("run took %v", took)
	}
	s := FromResult(r, kinds)
	if s.Ops == 0 || s.ByOp["a"].Ops+s.ByOp["b"].Ops != s.Ops {
		t.Fatalf("ops %d split %d+%d", s.Ops, s.ByOp["a"].Ops, s.ByOp["b"].Ops)
	}
	if s.Seconds < 0.09 || s.Seconds > 1 {
		t.Fatalf("measured %vs", s.Seconds)
	}
	if s.Latency.P50 < 1 {
		t.Fatalf("p50 %vms < the 1ms sleep", s.Latency.P50)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := Run(ctx, Config{Concurrency: 2, Duration: time.Hour}, func(ctx context.Context, w int, seq int64) (int, error) {
		select {
		case <-ctx.Done():
		case <-time.After(time.Millisecond):
		}
		return 0, nil
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&StatusError{Code: 404}, "404"},
		{fmt.Errorf("wrapped: %w", &StatusError{Class: "ttl0"}), "ttl0"},
		{context.DeadlineExceeded, "timeout"},
		{&net.OpError{Op: "dial", Err: errors.New("refused")}, "conn"},
		{errors.New("x"), "other"},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
