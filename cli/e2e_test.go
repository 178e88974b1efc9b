//go:build e2e

package cli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/regd/regd/internal/e2e"
)

func TestMain(m *testing.M) { e2e.Main(m) }

const (
	e2eAdmin = "admin-0123456789abcdef"
	e2eWrite = "write-0123456789abcdef"
)

// tokenFile writes a token file with an admin and a write token.
func tokenFile(t *testing.T) string {
	f := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(f, []byte("admin "+e2eAdmin+"\nwrite "+e2eWrite+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// regd runs the real binary as a client command and returns its exit
// code, stdout and stderr.
func regd(t *testing.T, bin, token string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = e2e.CleanEnv("REGD_TOKEN=" + token)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("regd %v: %v", args, err)
	}
	return code, out.String(), errOut.String()
}

type member struct {
	Name      string `json:"name"`
	ID        string `json:"id"`
	IsLeader  bool   `json:"is_leader"`
	IsLearner bool   `json:"is_learner"`
}

func members(t *testing.T, bin, endpoints string) []member {
	t.Helper()
	code, out, errOut := regd(t, bin, "", "members", "--endpoints", endpoints, "-w", "json")
	if code != 0 {
		t.Fatalf("regd members: exit %d: %s", code, errOut)
	}
	var st struct{ Members []member }
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("regd members -w json: %v: %q", err, out)
	}
	return st.Members
}

// TestE2EMembers: the membership procedure with the real binary, as
// docs/operations.md gives it: a fourth process joins a three-member
// cluster as a learner with the flags `regd members add` printed, is
// promoted, and removed; then a member dies, removing a live one is
// refused (409), and the dead one is removed.
func TestE2EMembers(t *testing.T) {
	bin := e2e.Build(t)
	tokens := tokenFile(t)
	c := e2e.StartCluster(t, bin, e2e.ClusterOptions{Extra: []string{"--auth-token-file", tokens}})
	eps := c.URL(0) + "," + c.URL(1) + "," + c.URL(2)

	n4 := e2e.NewNode(t)
	// A write token is not enough.
	code, _, errOut := regd(t, bin, e2eWrite, "members", "add", "m4", n4.PeerURL, "--learner", "--endpoints", eps)
	if code != 1 || !strings.Contains(errOut, "needs the admin scope") {
		t.Fatalf("members add with a write token: exit %d %q, want 1 and a 403", code, errOut)
	}
	var added struct {
		Member struct {
			ID        string `json:"id"`
			IsLearner bool   `json:"is_learner"`
		} `json:"member"`
		InitialCluster string   `json:"initial_cluster"`
		Flags          []string `json:"flags"`
	}
	// etcd refuses changes until this member has been connected to the
	// others for 5 s after the cluster started ("unhealthy cluster": 503).
	e2e.Eventually(t, 20*time.Second, "members add", func() error {
		code, out, errOut := regd(t, bin, e2eAdmin, "members", "add", "m4", n4.PeerURL, "--learner", "--endpoints", eps, "-w", "json")
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, errOut)
		}
		return json.Unmarshal([]byte(out), &added)
	})
	if !added.Member.IsLearner || !strings.Contains(added.InitialCluster, "m4="+n4.PeerURL) || !slices.Contains(added.Flags, "--initial-cluster-state=existing") {
		t.Fatalf("members add answered %+v", added)
	}
	// Start m4 with exactly the printed flags, its own addresses filled in.
	var args []string
	for _, f := range added.Flags {
		f = strings.NewReplacer("<client-url>", n4.ClientURL, "<host:port>", n4.HTTPAddr, "<dir>", n4.DataDir).Replace(f)
		args = append(args, f)
	}
	p4 := e2e.Start(t, bin, t.TempDir(), append(args, "--dns-addr", n4.DNSAddr, "--auth-token-file", tokens)...)
	p4.WaitReady(n4.URL(), 30*time.Second)
	if ms := members(t, bin, n4.URL()); len(ms) != 4 {
		t.Fatalf("m4 sees %d members: %+v", len(ms), ms)
	}
	// Promote: etcd refuses (learner_not_ready) until m4 has caught up.
	e2e.Eventually(t, 30*time.Second, "members promote", func() error {
		code, _, errOut := regd(t, bin, e2eAdmin, "members", "promote", added.Member.ID, "--endpoints", eps)
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, errOut)
		}
		return nil
	})
	for _, m := range members(t, bin, eps) {
		if m.IsLearner {
			t.Errorf("%s is still a learner after the promotion", m.Name)
		}
	}
	// Remove m4 again (through m1), and stop it.
	removeMember(t, bin, c.URL(0), added.Member.ID)
	if code, ok := p4.WaitExit(30 * time.Second); !ok {
		t.Errorf("m4 still runs after its removal")
	} else {
		t.Logf("m4 exited with code %d after its removal", code)
	}
	if ms := members(t, bin, eps); len(ms) != 3 {
		t.Fatalf("%d members after removing m4: %+v", len(ms), ms)
	}

	// m3 dies. Removing m2 would leave m1 and the dead m3: refused.
	c.Kill(2)
	code, _, errOut = regd(t, bin, e2eAdmin, "members", "remove", c.Members[1].ID, "--endpoints", c.URL(0))
	if code != 1 || !strings.Contains(errOut, "quorum_at_risk") || !strings.Contains(errOut, "m3") {
		t.Fatalf("removing m2 with m3 dead: exit %d %q, want 1 with 409 quorum_at_risk naming m3", code, errOut)
	}
	// The member answering cannot remove itself.
	code, _, errOut = regd(t, bin, e2eAdmin, "members", "remove", c.Members[0].ID, "--endpoints", c.URL(0))
	if code != 1 || !strings.Contains(errOut, "member_conflict") {
		t.Fatalf("m1 removing itself: exit %d %q, want 1 with 409 member_conflict", code, errOut)
	}
	// Removing the dead member is how it is replaced.
	removeMember(t, bin, c.URL(0), c.Members[2].ID)
	if ms := members(t, bin, c.URL(0)+","+c.URL(1)); len(ms) != 2 {
		t.Fatalf("%d members after removing m3: %+v", len(ms), ms)
	}
}

// removeMember removes member id through endpoint, retrying while the
// cluster answers 503 (no leader yet after a member died, or a change that
// did not apply in time) or the command's deadline passed (an election
// under load can outlast it); after such an attempt, which may have
// applied, a 404 for the member is its success. Any other failure fails
// the test.
func removeMember(t *testing.T, bin, endpoint, id string) {
	t.Helper()
	inDoubt := false
	e2e.Eventually(t, 60*time.Second, "members remove "+id, func() error {
		code, _, errOut := regd(t, bin, e2eAdmin, "members", "remove", id, "--endpoints", endpoint)
		switch {
		case code == 0:
			return nil
		case inDoubt && strings.Contains(errOut, "HTTP 404"):
			return nil
		case strings.Contains(errOut, "HTTP 503"), strings.Contains(errOut, "deadline exceeded"):
			inDoubt = true
			return fmt.Errorf("exit %d: %s", code, errOut)
		}
		t.Fatalf("members remove %s: exit %d: %s", id, code, errOut)
		return nil
	})
}

// sseEvent is one Server-Sent Event.
type sseEvent struct{ id, typ, data string }

// firstEvent opens url's watch with Last-Event-ID and returns the first
// event.
func firstEvent(t *testing.T, url, lastID string) sseEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("watch %s: %v", url, err)
	}
	defer resp.Body.Close()
	var ev sseEvent
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.typ = line[7:]
		case strings.HasPrefix(line, "data: "):
			ev.data = line[6:]
		case line == "" && ev.typ != "":
			return ev
		}
	}
	t.Fatalf("watch %s ended without an event: %v", url, sc.Err())
	return ev
}

type exported struct {
	Instances []struct {
		Service  string            `json:"service"`
		ID       string            `json:"id"`
		Address  string            `json:"address"`
		Metadata map[string]string `json:"metadata"`
		LeaseID  string            `json:"lease_id"`
	} `json:"instances"`
	Revision int64 `json:"revision"`
}

func export(t *testing.T, bin, endpoint string) exported {
	t.Helper()
	code, out, errOut := regd(t, bin, "", "export", "--endpoints", endpoint, "-w", "json")
	if code != 0 {
		t.Fatalf("regd export: exit %d: %s", code, errOut)
	}
	var ex exported
	if err := json.Unmarshal([]byte(out), &ex); err != nil {
		t.Fatalf("regd export -w json: %v", err)
	}
	return ex
}

type expiry struct {
	Service, ID string
	Revision    int64
}

func expirations(t *testing.T, base string) []expiry {
	t.Helper()
	r := e2e.Do(t, http.MethodGet, base+"/v1/expirations?limit=1000", "")
	var out struct{ Expirations []expiry }
	r.JSON(t, &out)
	return out.Expirations
}

// TestE2ESnapshotRestore: snapshot → restore → start → the same
// instances; an SSE client of the old node resuming on the restored one
// gets a reset; the expiry ledger has each report once, the one from
// before the snapshot and the one of a lease that ran out after the
// restore.
func TestE2ESnapshotRestore(t *testing.T) {
	bin := e2e.Build(t)
	tokens := tokenFile(t)
	pa, a := e2e.StartNode(t, bin, t.TempDir(), e2e.CleanEnv(), "--auth-token-file", tokens)
	reg := func(base, service, id string, ttl int) {
		t.Helper()
		body := fmt.Sprintf(`{"address":"10.2.0.1:%d","ttl":%d,"metadata":{"k":%q}}`, 1000+len(id), ttl, id)
		req, _ := http.NewRequest(http.MethodPut, base+"/v1/services/"+service+"/instances/"+id, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e2eWrite)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("register %s/%s: %v %v", service, id, resp, err)
		}
		resp.Body.Close()
	}
	for i := range 5 {
		reg(a.URL(), "keep", fmt.Sprintf("k%d", i), 3600)
	}
	// One expiry before the snapshot, reported and in the ledger.
	reg(a.URL(), "gone", "g1", 2)
	e2e.Eventually(t, 20*time.Second, "the expiry of gone/g1", func() error {
		if n := len(expirations(t, a.URL())); n != 1 {
			return fmt.Errorf("%d expiry reports", n)
		}
		return nil
	})
	// One lease that runs out after the restore: nobody heartbeats it.
	reg(a.URL(), "later", "l1", 4)
	// A watch client of the old node, with the id of its last event.
	last := firstEvent(t, a.URL()+"/v1/services/keep/watch", "0")
	if last.id == "" {
		t.Fatalf("no event id from the old node: %+v", last)
	}
	before := export(t, bin, a.URL())

	file := filepath.Join(t.TempDir(), "regd.snapshot")
	code, out, errOut := regd(t, bin, e2eAdmin, "snapshot", "save", file, "--endpoints", a.URL())
	if code != 0 {
		t.Fatalf("snapshot save: exit %d: %s", code, errOut)
	}
	t.Logf("%s", strings.TrimSpace(out))
	pa.Signal(syscall.SIGTERM)
	pa.Wait(20 * time.Second)

	b := e2e.NewNode(t)
	code, out, errOut = regd(t, bin, "", "snapshot", "restore", file, "--data-dir", b.DataDir,
		"--name", "restored", "--initial-advertise-peer-urls", b.PeerURL, "-w", "json")
	if code != 0 {
		t.Fatalf("snapshot restore: exit %d: %s", code, errOut)
	}
	var restored struct{ Flags []string }
	if err := json.Unmarshal([]byte(out), &restored); err != nil {
		t.Fatalf("snapshot restore -w json: %v %q", err, out)
	}
	began := time.Now()
	args := append(restored.Flags, "--http-addr", b.HTTPAddr, "--listen-client-urls", b.ClientURL, "--advertise-client-urls", b.ClientURL, "--dns-addr", b.DNSAddr, "--auth-token-file", tokens)
	pb := e2e.Start(t, bin, t.TempDir(), args...)
	pb.WaitReady(b.URL(), 30*time.Second)
	t.Logf("restored node ready %s after its start", time.Since(began).Round(time.Millisecond))

	after := export(t, bin, b.URL())
	if after.Revision <= before.Revision+999_000_000 {
		t.Errorf("revision after the restore %d, before %d: want it bumped by a billion", after.Revision, before.Revision)
	}
	beforeJSON, _ := json.Marshal(before.Instances)
	afterJSON, _ := json.Marshal(after.Instances)
	if string(beforeJSON) != string(afterJSON) {
		t.Errorf("the restored registry lists\n%s\nthe snapshot held\n%s", afterJSON, beforeJSON)
	}
	// The old node's watch client resumes on the restored one: reset.
	ev := firstEvent(t, b.URL()+"/v1/services/keep/watch", last.id)
	if ev.typ != "reset" || !strings.Contains(ev.data, `"k4"`) {
		t.Errorf("resuming after %s on the restored node: first event %s %.200s, want a reset with the list", last.id, ev.typ, ev.data)
	}
	// The lease that was left to run out is reported once, by the
	// restored node; the report from before is there once too.
	e2e.Eventually(t, 30*time.Second, "the expiry of later/l1 after the restore", func() error {
		for _, x := range expirations(t, b.URL()) {
			if x.Service == "later" {
				return nil
			}
		}
		return fmt.Errorf("not reported yet")
	})
	seen := map[string]int{}
	for _, x := range expirations(t, b.URL()) {
		seen[x.Service+"/"+x.ID]++
	}
	if seen["gone/g1"] != 1 || seen["later/l1"] != 1 || len(seen) != 2 {
		t.Errorf("expiry reports after the restore: %v, want gone/g1 and later/l1 once each", seen)
	}
}
