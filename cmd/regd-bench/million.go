package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/regd/regd/internal/loadgen"
)

// millionResult is target 4: a registry of --instances instances in
// --services services.
type millionResult struct {
	Instances int `json:"instances"`
	Services  int `json:"services"`
	// Registering them all over REST, --register-concurrency clients
	// spread over the members.
	RegisterSeconds float64          `json:"register_seconds"`
	RegisterPerSec  float64          `json:"register_per_sec"`
	RegisterLatency loadgen.Latency  `json:"register_latency_ms"`
	RegisterErrors  map[string]int64 `json:"register_errors"`
	Listed          int64            `json:"listed"` // instances GET /v1/services counts afterwards
	// One service of --k instances listed at --concurrency, before the
	// others were registered and after.
	ListEmpty  *loadgen.Stats `json:"list_empty"`
	ListLoaded *loadgen.Stats `json:"list_loaded"`
	// RSS per member once populated, and after the restart.
	RSSLoaded    []float64 `json:"rss_loaded_mib"`
	RSSRestarted []float64 `json:"rss_restarted_mib,omitempty"`
	DataDirMiB   []float64 `json:"data_dir_mib,omitempty"`
	// The restart (--stop-cmd, then --start-cmd): how long the stop took;
	// from the start command's beginning, until it returned, until every
	// member answers /readyz, until a member lists every instance again.
	StopSeconds         float64 `json:"stop_seconds,omitempty"`
	RestartCmdSeconds   float64 `json:"start_cmd_seconds,omitempty"`
	RestartReadySeconds float64 `json:"restart_ready_seconds,omitempty"`
	RestartFullSeconds  float64 `json:"restart_full_seconds,omitempty"`
}

// million is target 4: list one --k-instance service on an empty registry,
// register --instances instances over --services services, list it again,
// take the members' RSS and data dir sizes, a snapshot, and (with
// --stop-cmd and --start-cmd) the time to restart.
func (s *scaleRun) million(ctx context.Context) error {
	o := s.o
	r := &millionResult{Instances: o.instances, Services: o.services}
	s.res.Million = r
	s.res.Smoke = o.instances < 1000000 || o.services < 10000 || len(o.targets) < 3
	s.res.Params = map[string]any{"instances": o.instances, "services": o.services, "k": o.k, "register_concurrency": o.regConc,
		"list_concurrency": o.concurrency, "list_duration": o.duration.String(), "stop_cmd": o.stopCmd, "start_cmd": o.startCmd}
	be := &regdBackend{h: s.h, targets: o.targets}
	tr := &tracker{}
	if o.cleanup {
		defer s.cleanup(be, tr)
	}
	listSvc := s.service(be, "list")
	if _, err := s.preregister(ctx, be, listSvc, o.k, tr); err != nil {
		return err
	}
	nt := int64(len(o.targets))
	list := func(ctx context.Context, _ int, seq int64) (int, error) {
		return 0, be.list(ctx, int(seq%nt), listSvc)
	}
	var err error
	if r.ListEmpty, _, err = s.measure(ctx, be, "list (empty registry)", list); err != nil {
		return err
	}

	prefix := fmt.Sprintf("%s-%s-pop-", o.service, s.runID)
	s.logf("million: registering %d instances in %d services, %d clients", o.instances, o.services, o.regConc)
	m0 := s.mark()
	res, err := loadgen.Run(ctx, loadgen.Config{Concurrency: o.regConc, Count: int64(o.instances)}, func(ctx context.Context, _ int, seq int64) (int, error) {
		svc := prefix + strconv.FormatInt(seq%int64(o.services), 10)
		_, err := s.request(ctx, http.MethodPut, int(seq%nt), "/v1/services/"+svc+"/instances/p"+strconv.FormatInt(seq, 10), regBody(address(seq), 3600), http.StatusCreated, http.StatusOK)
		return 0, err
	})
	m1 := s.mark()
	s.addPhase("register", m0, m1)
	if res != nil {
		st := loadgen.FromResult(res, nil)
		r.RegisterSeconds = m1.At.Sub(m0.At).Seconds()
		r.RegisterPerSec = float64(st.Ops) / r.RegisterSeconds
		r.RegisterLatency, r.RegisterErrors = st.Latency, st.Errors
	}
	if err != nil {
		return err
	}
	if r.Listed, err = s.listed(ctx, len(o.targets)-1); err != nil {
		return err
	}
	r.RSSLoaded = s.rssNow()[:len(o.targets)]
	for _, d := range o.dataDirs {
		r.DataDirMiB = append(r.DataDirMiB, float64(dirSize(d))/(1<<20))
	}
	if r.ListLoaded, _, err = s.measure(ctx, be, "list (loaded registry)", list); err != nil {
		return err
	}
	if len(o.etcd) > 0 {
		n := len(s.res.Goals)
		if err := s.snapshot(ctx); err != nil {
			s.res.Notes = append(s.res.Notes, "snapshot: "+err.Error())
		}
		s.res.Goals = s.res.Goals[:n] // its line comes below, with the data dirs
	}

	if o.startCmd != "" {
		if err := s.restart(ctx, r); err != nil {
			return err
		}
	}

	maxRSS := 0.0
	for _, v := range append(append([]float64{}, r.RSSLoaded...), r.RSSRestarted...) {
		maxRSS = max(maxRSS, v)
	}
	s.res.Goals = append(s.res.Goals,
		goal{Name: fmt.Sprintf("time to register %d instances in %d services", o.instances, o.services), Goal: "reported",
			Measured: fmt.Sprintf("%.1f s (%.0f/s at %d clients, p99 %s, errors %s); %d listed afterwards", r.RegisterSeconds, r.RegisterPerSec, o.regConc,
				fmtMs(r.RegisterLatency.P99), counts(r.RegisterErrors), r.Listed)},
		metGoal("RSS per member", "≤ 3 GiB", fmt.Sprintf("populated %s; after the restart %s", mibList(r.RSSLoaded), mibList(r.RSSRestarted)), maxRSS > 0 && maxRSS <= 3*1024),
	)
	if r.ListEmpty != nil && r.ListLoaded != nil && r.ListEmpty.Latency.P99 > 0 {
		q := r.ListLoaded.Latency.P99 / r.ListEmpty.Latency.P99
		s.res.Goals = append(s.res.Goals, metGoal(fmt.Sprintf("list of one %d-instance service, p99 among all vs empty registry", o.k), "≤ 2×",
			fmt.Sprintf("%.2f× (%s vs %s; %.0f vs %.0f lists/s at %d clients)", q, fmtMs(r.ListLoaded.Latency.P99), fmtMs(r.ListEmpty.Latency.P99),
				r.ListLoaded.OpsPerSec, r.ListEmpty.OpsPerSec, o.concurrency), q <= 2))
	}
	if o.startCmd != "" {
		s.res.Goals = append(s.res.Goals, goal{Name: "restart to ready", Goal: "reported",
			Measured: fmt.Sprintf("every member ready %.1f s after the start began (the start command took %.1f s); a member lists all instances after %.1f s",
				r.RestartReadySeconds, r.RestartCmdSeconds, r.RestartFullSeconds)})
	}
	if sn := s.res.Snapshot; sn != nil {
		dirs := ""
		if len(r.DataDirMiB) > 0 {
			dirs = "; data dirs " + mibList(r.DataDirMiB)
		}
		s.res.Goals = append(s.res.Goals, goal{Name: "snapshot size", Goal: "reported",
			Measured: fmt.Sprintf("%.0f MiB, taken in %.1f s (bbolt file %.0f MiB)%s", sn.SnapshotMiB, sn.SnapshotSecs, sn.DBSizeMiB, dirs)})
	}
	return nil
}

// listed is the number of instances GET /v1/services on target counts.
func (s *scaleRun) listed(ctx context.Context, target int) (int64, error) {
	b, err := s.request(ctx, http.MethodGet, target, "/v1/services", nil, http.StatusOK)
	if err != nil {
		return 0, err
	}
	var l struct {
		Services []struct {
			Instances int64 `json:"instances"`
		} `json:"services"`
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return 0, fmt.Errorf("decode /v1/services: %w", err)
	}
	var n int64
	for _, sv := range l.Services {
		n += sv.Instances
	}
	return n, nil
}

// restart runs --stop-cmd (if any) and --start-cmd, then waits until every
// member is ready and the last one lists every instance again.
func (s *scaleRun) restart(ctx context.Context, r *millionResult) error {
	o := s.o
	sh := func(flag, c string) error {
		s.logf("million: %s: %s", flag, c)
		cmd := exec.CommandContext(ctx, "sh", "-c", c)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w", flag, err)
		}
		return nil
	}
	if o.stopCmd != "" {
		t := time.Now()
		if err := sh("--stop-cmd", o.stopCmd); err != nil {
			return err
		}
		r.StopSeconds = time.Since(t).Seconds()
	}
	t0 := time.Now()
	if err := sh("--start-cmd", o.startCmd); err != nil {
		return err
	}
	r.RestartCmdSeconds = time.Since(t0).Seconds()
	deadline := time.Now().Add(10 * time.Minute)
	for t := range o.targets {
		for {
			err := s.h.do(ctx, http.MethodGet, "http://"+o.targets[t]+"/readyz", nil, expect(http.StatusOK))
			if err == nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s not ready within 10 minutes of the restart", o.targets[t])
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	r.RestartReadySeconds = time.Since(t0).Seconds()
	last := len(o.targets) - 1
	for {
		n, err := s.listed(ctx, last)
		if err == nil && n >= r.Listed {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s lists %d of %d instances 10 minutes after the restart (%v)", o.targets[last], n, r.Listed, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.RestartFullSeconds = time.Since(t0).Seconds()
	// New processes: find them again by their ports.
	s.startSampler(nil)
	if len(o.pids) > 0 {
		s.res.Notes = append(s.res.Notes, "after the restart the servers were found by their ports, not --pids")
	}
	r.RSSRestarted = s.rssNow()[:len(o.targets)]
	return nil
}

// dirSize is the bytes of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

func mibList(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	var parts []string
	for _, x := range v {
		parts = append(parts, fmt.Sprintf("%.0f MiB", x))
	}
	return joinComma(parts)
}
