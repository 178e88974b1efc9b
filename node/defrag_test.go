package node_test

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
)

// defragRun is one defragmentation, read back from a member's log line.
type defragRun struct {
	member     string
	start, end time.Time
}

// TestDefragOneAtATime: every member gets free pages worth a
// defragmentation at once (1.5 MiB overwritten and compacted, threshold
// 512 KiB, a look every 50 ms); they still defragment one at a time, every
// one of them, and the leader hands leadership over first.
func TestDefragOneAtATime(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster")
	}
	c := regdtest.StartCluster(t, 3, regdtest.Options{MaintenanceInterval: 50 * time.Millisecond, DefragMinFree: 512 << 10})
	began := time.Now()
	cli := c.EtcdClientAll(t)
	// Free pages: values written and overwritten, history compacted.
	for i := range 200 {
		if _, err := cli.Put(t.Context(), fmt.Sprintf("/regdtest/filler/%d", i%20), strings.Repeat("x", 8<<10)); err != nil {
			t.Fatal(err)
		}
	}
	c.CompactToHead(t, cli)
	var runs []defragRun
	poll.Until(t, 30*time.Second, "each member defragments, a leader after handing over", func() error {
		runs = defragRuns(t, c.LogLines("defragmented the backend database"))
		members := map[string]bool{}
		for _, r := range runs {
			members[r.member] = true
		}
		// bbolt frees the pages a compaction released at a later write
		// (once no read sees them): a cluster in use writes.
		if _, err := cli.Put(t.Context(), "/regdtest/tick", time.Now().String()); err != nil {
			return err
		}
		if len(members) < 3 || len(c.LogLines("handed leadership over to defragment as a follower")) == 0 {
			return fmt.Errorf("%d defragmentations by %d members so far, %d hand-overs", len(runs), len(members), len(c.LogLines("handed leadership over")))
		}
		return nil
	})
	sort.Slice(runs, func(i, j int) bool { return runs[i].start.Before(runs[j].start) })
	for i := 1; i < len(runs); i++ {
		if prev := runs[i-1]; runs[i].start.Before(prev.end) {
			t.Errorf("%s defragmented from %s while %s did until %s", runs[i].member, runs[i].start.Format("15:04:05.000"), prev.member, prev.end.Format("15:04:05.000"))
		}
	}
	t.Logf("%d defragmentations, none overlapping (%s)", len(runs), time.Since(began))
}

// defragRuns parses regdtest's console log lines: time, level, logger,
// message, then the fields as JSON.
func defragRuns(t *testing.T, lines []string) []defragRun {
	var out []defragRun
	for _, l := range lines {
		parts := strings.Split(l, "\t")
		end, err := time.Parse("2006-01-02T15:04:05.000Z0700", parts[0])
		if err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		var f struct {
			Member string `json:"member"`
			Took   string `json:"took"`
		}
		if err := json.Unmarshal([]byte(parts[len(parts)-1]), &f); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		took, err := time.ParseDuration(f.Took)
		if err != nil {
			t.Fatalf("log line %q: took: %v", l, err)
		}
		// The line is written after the defragmentation ends and before the
		// lock is released, so [end-took, end] is within the time the lock
		// was held. Timestamps are in milliseconds: widen the start by one.
		out = append(out, defragRun{member: f.Member, start: end.Add(-took).Add(time.Millisecond), end: end})
	}
	return out
}
