package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/regd/regd/client"
	"github.com/regd/regd/internal/regdtest"
)

// logger shows the client's own logs with -v when REGD_CLIENT_LOG is set.
func logger() *slog.Logger {
	if os.Getenv("REGD_CLIENT_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func cfgFor(c *regdtest.Cluster, members ...int) client.Config {
	cfg := client.Config{Logger: logger()}
	for _, i := range members {
		cfg.Addrs = append(cfg.Addrs, c.Members[i].HTTPAddr)
	}
	return cfg
}

func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an in-process regd cluster")
	}
}

type list struct {
	Instances []client.Instance `json:"instances"`
	Revision  int64             `json:"revision"`
}

func listOf(t *testing.T, m *regdtest.Member, service string) map[string]client.Instance {
	t.Helper()
	return listAs(t, m, service, "")
}

// listAs lists service on m, with token when it is not empty.
func listAs(t *testing.T, m *regdtest.Member, service, token string) map[string]client.Instance {
	t.Helper()
	status, body := doToken(t, http.MethodGet, m.URL("/v1/services/"+service+"/instances"), token, nil)
	if status != http.StatusOK {
		t.Fatalf("list %s: %d %s", service, status, body)
	}
	var l list
	regdtest.MustJSON(t, body, &l)
	out := make(map[string]client.Instance)
	for _, in := range l.Instances {
		out[in.ID] = in
	}
	return out
}

// register registers through m, retrying while the cluster answers 503
// (an election after a member was killed).
func register(t *testing.T, m *regdtest.Member, service, id string, ttl int) {
	t.Helper()
	body := map[string]any{"address": "10.1.0.1:80", "ttl": ttl}
	regdtest.Eventually(t, 20*time.Second, func() error {
		status, _, resp := regdtest.Do(t, http.MethodPut, m.URL("/v1/services/"+service+"/instances/"+id), body)
		if status != http.StatusCreated && status != http.StatusOK {
			return fmt.Errorf("register %s/%s: %d %s", service, id, status, resp)
		}
		return nil
	})
}

// registerAsync is register for other goroutines: it reports instead of
// failing the test.
func registerAsync(m *regdtest.Member, service, id string, ttl int) error {
	body, _ := json.Marshal(map[string]any{"address": "10.1.0.1:80", "ttl": ttl})
	hc := &http.Client{Timeout: 10 * time.Second}
	var last error
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		req, _ := http.NewRequest(http.MethodPut, m.URL("/v1/services/"+service+"/instances/"+id), bytes.NewReader(body))
		resp, err := hc.Do(req)
		if err != nil {
			last = err
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK {
			return nil
		}
		last = fmt.Errorf("status %d", resp.StatusCode)
	}
	return fmt.Errorf("register %s/%s: %w", service, id, last)
}

func deregister(t *testing.T, m *regdtest.Member, service, id string) {
	t.Helper()
	regdtest.Eventually(t, 20*time.Second, func() error {
		status, _, resp := regdtest.Do(t, http.MethodDelete, m.URL("/v1/services/"+service+"/instances/"+id), nil)
		if status != http.StatusNoContent {
			return fmt.Errorf("deregister %s/%s: %d %s", service, id, status, resp)
		}
		return nil
	})
}

// recorder counts a Discovery's callbacks.
type recorder struct {
	mu      sync.Mutex
	regs    map[string]int
	deregs  map[string][]string // id → reasons
	ordered []string            // "+id" / "-id:reason"
}

func record(d *client.Discovery) *recorder {
	r := &recorder{regs: map[string]int{}, deregs: map[string][]string{}}
	d.OnRegister(func(in client.Instance) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.regs[in.ID]++
		r.ordered = append(r.ordered, "+"+in.ID)
	})
	d.OnDeregister(func(in client.Instance, reason string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.deregs[in.ID] = append(r.deregs[in.ID], reason)
		r.ordered = append(r.ordered, "-"+in.ID+":"+reason)
	})
	return r
}

func (r *recorder) registered(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.regs[id]
}

func (r *recorder) reasons(id string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.deregs[id])
}

// exactlyOnce fails unless every id was registered exactly once and the
// Discovery's state holds exactly ids, like the cluster's list.
func exactlyOnce(t *testing.T, r *recorder, d *client.Discovery, ids []string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if r.regs[id] != 1 {
			t.Errorf("OnRegister(%s) called %d times, want 1; callbacks: %v", id, r.regs[id], r.ordered)
		}
	}
	if len(r.regs) != len(ids) {
		t.Errorf("OnRegister for %d ids, want %d: %v", len(r.regs), len(ids), r.regs)
	}
	if len(r.deregs) != 0 {
		t.Errorf("unexpected OnDeregister calls: %v", r.deregs)
	}
	var got []string
	for _, in := range d.Instances() {
		got = append(got, in.ID)
	}
	want := slices.Sorted(slices.Values(ids))
	if !slices.Equal(got, want) {
		t.Errorf("Instances() = %v, want %v", got, want)
	}
}

func TestRegistrar(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	r := client.NewRegistrar(cfgFor(c, 0), "web", "w1", "10.0.0.1:8080",
		client.RegistrarOptions{TTL: 2, Metadata: map[string]string{"zone": "a"}})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := r.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	in, ok := listOf(t, m, "web")["w1"]
	if !ok || in.Address != "10.0.0.1:8080" || in.TTL != 2 || in.Metadata["zone"] != "a" || in.RegisteredAt.IsZero() {
		t.Fatalf("after Start: %+v (listed %v)", in, ok)
	}
	if got := r.Instance(); got.LeaseID != in.LeaseID || got.Revision != in.Revision {
		t.Fatalf("Instance() = %+v, listed %+v", got, in)
	}

	// Heartbeats keep a TTL-2 instance alive: present at every poll for 5 s.
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		got, ok := listOf(t, m, "web")["w1"]
		if !ok {
			t.Fatal("instance vanished although the registrar heartbeats")
		}
		if got.LeaseID != in.LeaseID {
			t.Fatalf("lease changed from %s to %s: the instance was registered again", in.LeaseID, got.LeaseID)
		}
	}
	if err := r.Err(); err != nil {
		t.Fatalf("Err() = %v", err)
	}

	// Removed behind its back: the next heartbeat's 404 registers it again.
	deregister(t, m, "web", "w1")
	regdtest.Eventually(t, 5*time.Second, func() error {
		got, ok := listOf(t, m, "web")["w1"]
		if !ok {
			return fmt.Errorf("not registered again yet")
		}
		if got.LeaseID == in.LeaseID {
			return fmt.Errorf("still the old lease")
		}
		return nil
	})

	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, ok := listOf(t, m, "web")["w1"]; ok {
		t.Fatal("still listed after Close")
	}
	if status, _, body := regdtest.Do(t, http.MethodGet, m.URL("/v1/services/web/instances/w1"), nil); status != http.StatusNotFound {
		t.Fatalf("GET after Close: %d %s", status, body)
	}
	// Nothing of this was an expiry: give a stray lease time to run out.
	time.Sleep(3 * time.Second)
	var exp struct {
		Expirations []struct{ ID string } `json:"expirations"`
	}
	status, _, body := regdtest.Do(t, http.MethodGet, m.URL("/v1/expirations?service=web"), nil)
	if status != http.StatusOK {
		t.Fatalf("expirations: %d %s", status, body)
	}
	regdtest.MustJSON(t, body, &exp)
	if len(exp.Expirations) != 0 {
		t.Fatalf("expirations reported: %s", body)
	}
	if err := r.Start(ctx); err != client.ErrClosed {
		t.Fatalf("Start after Close = %v, want ErrClosed", err)
	}
}

func TestRegistrarBadInput(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := regdtest.StartCluster(t, 1)
	r := client.NewRegistrar(cfgFor(c, 0), "web", "w1", "not an address", client.RegistrarOptions{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := r.Start(ctx)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusBadRequest || ae.Code != "invalid_address" {
		t.Fatalf("Start = %v, want a 400 invalid_address APIError at once", err)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestDiscovery(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	register(t, m, "api", "early", 30)
	d := client.NewDiscovery(cfgFor(c, 0), "api")
	rec := record(d)
	if err := d.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer d.Close()
	if rec.registered("early") != 1 || len(d.Instances()) != 1 {
		t.Fatalf("initial list: OnRegister(early) %d times, Instances %v", rec.registered("early"), d.Instances())
	}
	if d.Revision() == 0 {
		t.Fatal("Revision() = 0 after Start")
	}
	deregister(t, m, "api", "early")

	register(t, m, "api", "a", 30)
	register(t, m, "api", "b", 30)
	register(t, m, "api", "c", 2) // left to expire
	regdtest.Eventually(t, 10*time.Second, func() error {
		if n := len(d.Instances()); n != 3 {
			return fmt.Errorf("%d instances", n)
		}
		return nil
	})
	for _, id := range []string{"a", "b", "c"} {
		if n := rec.registered(id); n != 1 {
			t.Errorf("OnRegister(%s) called %d times", id, n)
		}
	}
	if got := rec.reasons("early"); !slices.Equal(got, []string{client.ReasonDeregister}) {
		t.Errorf("OnDeregister(early) reasons %v", got)
	}
	var picks []string
	for range 7 {
		in, ok := d.Pick()
		if !ok {
			t.Fatal("Pick found nothing")
		}
		picks = append(picks, in.ID)
	}
	if want := []string{"a", "b", "c", "a", "b", "c", "a"}; !slices.Equal(picks, want) {
		t.Errorf("picks %v, want %v", picks, want)
	}

	deregister(t, m, "api", "a")
	regdtest.Eventually(t, 10*time.Second, func() error {
		if got := rec.reasons("a"); !slices.Equal(got, []string{client.ReasonDeregister}) {
			return fmt.Errorf("OnDeregister(a) reasons %v", got)
		}
		return nil
	})
	regdtest.Eventually(t, 20*time.Second, func() error {
		if got := rec.reasons("c"); !slices.Equal(got, []string{client.ReasonExpire}) {
			return fmt.Errorf("OnDeregister(c) reasons %v", got)
		}
		return nil
	})
	got := d.Instances()
	if len(got) != 1 || got[0].ID != "b" || got[0].Address != "10.1.0.1:80" {
		t.Fatalf("Instances() = %+v, want only b", got)
	}
	if in, ok := d.Pick(); !ok || in.ID != "b" {
		t.Fatalf("Pick = %+v %v", in, ok)
	}
	// The state matches the cluster's list, at the same revision or newer.
	if l := listOf(t, m, "api"); len(l) != 1 || l["b"].Revision != got[0].Revision {
		t.Fatalf("cluster list %v, discovery %v", l, got)
	}
	d.Close()
	d.Close()
}

// startAttached starts a Discovery on a 3-member cluster with member 0
// first, and waits until its stream delivers an event: it is then attached
// to member 0.
func startAttached(t *testing.T, ctx context.Context, c *regdtest.Cluster, service string) (*client.Discovery, *recorder) {
	t.Helper()
	d := client.NewDiscovery(cfgFor(c, 0, 1, 2), service)
	rec := record(d)
	if err := d.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(d.Close)
	register(t, c.Members[0], service, "warm", 60)
	regdtest.Eventually(t, 10*time.Second, func() error {
		if rec.registered("warm") == 0 {
			return fmt.Errorf("the stream has not delivered the first event")
		}
		return nil
	})
	return d, rec
}

func TestDiscoveryFailover(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := regdtest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	d, rec := startAttached(t, ctx, c, "pay")

	// A registrar with member 0 first keeps its instance through the crash.
	// TTL 6: heartbeats every 2 s leave room for a failover on a loaded
	// machine under the race detector (measured 1-2 s, more under load).
	reg := client.NewRegistrar(cfgFor(c, 0, 1, 2), "pay", "keeper", "10.2.0.1:80", client.RegistrarOptions{TTL: 6})
	if err := reg.Start(ctx); err != nil {
		t.Fatalf("registrar Start: %v", err)
	}
	keeper := reg.Instance()

	c.Kill(0)
	// If member 0 led, writes answer 503 until a new leader is elected;
	// clients retry those, the test waits for the election instead.
	c.WaitLeader(t)
	ids := []string{"warm", "keeper"}
	for i := range 10 {
		id := fmt.Sprintf("p%02d", i)
		register(t, c.Members[1], "pay", id, 60)
		ids = append(ids, id)
	}
	regdtest.Eventually(t, 20*time.Second, func() error {
		if n := len(d.Instances()); n != len(ids) {
			return fmt.Errorf("%d of %d instances", n, len(ids))
		}
		return nil
	})
	// Outlive the TTL of the registrar's instance: heartbeats moved on.
	for end := time.Now().Add(7 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		in, ok := listOf(t, c.Members[1], "pay")["keeper"]
		if !ok || in.LeaseID != keeper.LeaseID {
			t.Fatalf("the registrar's instance expired or was re-registered after the crash: %+v %v", in, ok)
		}
	}
	exactlyOnce(t, rec, d, ids)
	if err := reg.Close(ctx); err != nil {
		t.Fatalf("registrar Close: %v", err)
	}
	regdtest.Eventually(t, 10*time.Second, func() error {
		if got := rec.reasons("keeper"); !slices.Equal(got, []string{client.ReasonDeregister}) {
			return fmt.Errorf("OnDeregister(keeper) reasons %v", got)
		}
		return nil
	})
}

func TestDiscoveryResume(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := regdtest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	d, rec := startAttached(t, ctx, c, "cart")

	ids := []string{"warm"}
	for i := range 5 {
		id := fmt.Sprintf("before%d", i)
		register(t, c.Members[1], "cart", id, 60)
		ids = append(ids, id)
	}
	// Changes keep coming while member 0 shuts down.
	var during []string
	done := make(chan error, 1)
	go func() {
		for i := range 10 {
			id := fmt.Sprintf("during%d", i)
			if err := registerAsync(c.Members[1], "cart", id, 60); err != nil {
				done <- err
				return
			}
			during = append(during, id)
			time.Sleep(50 * time.Millisecond)
		}
		done <- nil
	}()
	c.Stop(0)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ids = append(ids, during...)
	for i := range 3 {
		id := fmt.Sprintf("after%d", i)
		register(t, c.Members[2], "cart", id, 60)
		ids = append(ids, id)
	}
	regdtest.Eventually(t, 20*time.Second, func() error {
		if n := len(d.Instances()); n != len(ids) {
			return fmt.Errorf("%d of %d instances", n, len(ids))
		}
		return nil
	})
	// A last change to flush anything still in flight, then compare.
	register(t, c.Members[2], "cart", "last", 60)
	ids = append(ids, "last")
	regdtest.Eventually(t, 10*time.Second, func() error {
		if rec.registered("last") == 0 {
			return fmt.Errorf("last not seen")
		}
		return nil
	})
	exactlyOnce(t, rec, d, ids)
	cluster := listOf(t, c.Members[1], "cart")
	for _, in := range d.Instances() {
		if cluster[in.ID].Revision != in.Revision || cluster[in.ID].LeaseID != in.LeaseID {
			t.Errorf("instance %s: discovery %+v, cluster %+v", in.ID, in, cluster[in.ID])
		}
	}
	if d.Revision() < cluster["last"].Revision {
		t.Errorf("Revision() = %d, older than the last change %d", d.Revision(), cluster["last"].Revision)
	}
}

// TestDiscoveryReset: the only node a Discovery knows restarts and can no
// longer replay the history it asks for; the reset's full list replaces the
// state, with callbacks for the differences only.
func TestDiscoveryReset(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := regdtest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for _, id := range []string{"a", "b"} {
		register(t, c.Members[0], "inv", id, 60)
	}
	d := client.NewDiscovery(cfgFor(c, 2), "inv")
	rec := record(d)
	var (
		evMu   sync.Mutex
		events []client.Event
	)
	d.OnEvent(func(ev client.Event) {
		evMu.Lock()
		events = append(events, ev)
		evMu.Unlock()
	})
	if err := d.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer d.Close()
	before := d.Revision()

	c.Stop(2)
	deregister(t, c.Members[0], "inv", "a")
	register(t, c.Members[0], "inv", "c", 60)
	c.Restart(2)

	regdtest.Eventually(t, 30*time.Second, func() error {
		if rec.registered("c") != 1 || len(rec.reasons("a")) != 1 {
			return fmt.Errorf("no reset yet (revision %d, err %v)", d.Revision(), d.Err())
		}
		return nil
	})
	if got := rec.reasons("a"); !slices.Equal(got, []string{client.ReasonReset}) {
		t.Errorf("OnDeregister(a) reasons %v, want [reset]", got)
	}
	if n := rec.registered("b"); n != 1 {
		t.Errorf("OnRegister(b) called %d times: an unchanged instance was reported again", n)
	}
	var ids []string
	for _, in := range d.Instances() {
		ids = append(ids, in.ID)
	}
	if !slices.Equal(ids, []string{"b", "c"}) {
		t.Errorf("Instances() = %v, want [b c]", ids)
	}
	if d.Revision() <= before {
		t.Errorf("Revision() = %d, not past %d", d.Revision(), before)
	}
	// OnEvent saw the list Start began with, then the reset: once each,
	// with the lists as regd sent them.
	evMu.Lock()
	defer evMu.Unlock()
	var types []string
	for _, ev := range events {
		types = append(types, ev.Type)
	}
	if !slices.Equal(types, []string{client.EventList, client.EventReset}) {
		t.Fatalf("OnEvent types %v, want [list reset]", types)
	}
	var first, reset client.InstanceList
	regdtest.MustJSON(t, events[0].Data, &first)
	regdtest.MustJSON(t, events[1].Data, &reset)
	if len(first.Instances) != 2 || len(reset.Instances) != 2 || reset.Instances[1].ID != "c" || events[0].ID != fmt.Sprint(before) {
		t.Errorf("list event %s %s, reset event %s", events[0].ID, events[0].Data, events[1].Data)
	}
}
