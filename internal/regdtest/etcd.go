package regdtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/regd/regd/internal/syncbuf"
	"github.com/regd/regd/node"
)

// StartEtcd starts one embedded etcd member and nothing of regd around it:
// no view, no expiry reporter, no API. Tests of the registry's own types
// drive them on it by hand, in an order they choose. The member is closed
// when the test ends.
func StartEtcd(t testing.TB) *node.Node {
	t.Helper()
	peer := "http://" + freeAddr(t)
	client := "http://" + freeAddr(t)
	logs := &syncbuf.Buffer{}
	n, err := node.Start(context.Background(), node.Config{
		Name:                "solo",
		DataDir:             t.TempDir(),
		ListenClientURLs:    mustURLs(t, client),
		AdvertiseClientURLs: mustURLs(t, client),
		ListenPeerURLs:      mustURLs(t, peer),
		AdvertisePeerURLs:   mustURLs(t, peer),
		InitialCluster:      "solo=" + peer,
		ClusterState:        "new",
		ClusterToken:        fmt.Sprintf("regdtest-solo-%d", time.Now().UnixNano()),
		Logger:              memberLogger(logs, "solo").WithOptions(zap.IncreaseLevel(zapcore.WarnLevel)),
		TickMs:              50,
		ElectionMs:          750,
		ReadyTimeout:        30 * time.Second,
		MinFreeBytes:        -1,
	})
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		if t.Failed() {
			t.Logf("etcd logs (last 16 KiB):\n%s", logs.Tail(16<<10))
		}
	})
	return n
}
