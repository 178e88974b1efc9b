package loadgen

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ProcSample is what Linux's /proc tells about one process at one moment:
// CPU time used so far and resident memory.
type ProcSample struct {
	At  time.Time
	CPU time.Duration // utime + stime (/proc/<pid>/stat fields 14 and 15)
	RSS int64         // resident set, bytes (VmRSS of /proc/<pid>/status)
	HWM int64         // peak resident set, bytes (VmHWM)
}

// ReadProc samples process pid; pid 0 is this process (/proc/self).
func ReadProc(pid int) (ProcSample, error) {
	dir := "/proc/self"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	at := time.Now()
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return ProcSample{}, err
	}
	utime, stime, err := ParseStat(stat)
	if err != nil {
		return ProcSample{}, fmt.Errorf("%s/stat: %w", dir, err)
	}
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return ProcSample{}, err
	}
	rss, hwm := ParseStatusMemory(status)
	tick := ClockTick()
	return ProcSample{At: at, CPU: time.Duration(utime+stime) * tick, RSS: rss, HWM: hwm}, nil
}

// ParseStat reads utime and stime, in clock ticks, from the text of
// /proc/<pid>/stat (proc(5)). The second field, the command name in
// parentheses, may itself hold spaces and parentheses, so fields are
// counted from the last ')'.
func ParseStat(b []byte) (utime, stime uint64, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errors.New("no ')' after the command name")
	}
	// After ")": field 3 (state) onwards; utime is field 14, stime 15.
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	if utime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("utime: %w", err)
	}
	if stime, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return 0, 0, fmt.Errorf("stime: %w", err)
	}
	return utime, stime, nil
}

// ParseStatusMemory reads VmRSS and VmHWM, in bytes, from the text of
// /proc/<pid>/status; a field that is missing (a kernel thread, a zombie)
// reads as 0.
func ParseStatusMemory(b []byte) (rss, hwm int64) {
	for _, line := range bytes.Split(b, []byte("\n")) {
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			rss = kB(line[len("VmRSS:"):])
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			hwm = kB(line[len("VmHWM:"):])
		}
	}
	return rss, hwm
}

// kB parses "   12345 kB".
func kB(b []byte) int64 {
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0
	}
	if len(f) > 1 && f[1] != "kB" {
		return 0
	}
	return n << 10
}

var clockTick = func() time.Duration {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 10 * time.Millisecond
	}
	return tickFromAuxv(b)
}()

// ClockTick is the length of one clock tick, the unit of /proc/<pid>/stat's
// CPU times: 1/AT_CLKTCK seconds as the kernel told this process in its
// auxiliary vector (sysconf(_SC_CLK_TCK) without cgo), 10 ms if unknown.
func ClockTick() time.Duration { return clockTick }

// atClkTck is AT_CLKTCK of getauxval(3).
const atClkTck = 17

// tickFromAuxv reads AT_CLKTCK from the native-endian (type, value) word
// pairs of /proc/self/auxv; 64-bit words, as on every platform regd runs
// its benchmarks on.
func tickFromAuxv(b []byte) time.Duration {
	for len(b) >= 16 {
		typ := binary.NativeEndian.Uint64(b[:8])
		val := binary.NativeEndian.Uint64(b[8:16])
		b = b[16:]
		if typ == 0 {
			break
		}
		if typ == atClkTck && val > 0 && val <= uint64(time.Second) {
			return time.Second / time.Duration(val)
		}
	}
	return 10 * time.Millisecond
}

// FindListener returns the pid of the process that holds a listening TCP
// socket on port (IPv4 or IPv6, any address), from /proc/net/tcp{,6} and
// the processes' file descriptors. It finds processes this user may
// inspect only.
func FindListener(port int) (int, error) {
	var inodes []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		inodes = append(inodes, ListenInodes(b, port)...)
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("no listening socket on port %d in /proc/net/tcp", port)
	}
	want := map[string]bool{}
	for _, in := range inodes {
		want["socket:["+in+"]"] = true
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		fds, err := os.ReadDir(p + "/fd")
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(p + "/fd/" + fd.Name())
			if err == nil && want[link] {
				return strconv.Atoi(filepath.Base(p))
			}
		}
	}
	return 0, fmt.Errorf("the socket listening on port %d belongs to no process this user can inspect", port)
}

// ListenInodes returns the inodes of the sockets in LISTEN state (0A) on
// port in the text of /proc/net/tcp or tcp6 (proc(5)): columns
// "sl local_address rem_address st ... uid timeout inode", the address as
// hex IP:hex port.
func ListenInodes(b []byte, port int) []string {
	var out []string
	hexPort := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[0] == "sl" {
			continue
		}
		if strings.HasSuffix(f[1], hexPort) && f[3] == "0A" {
			out = append(out, f[9])
		}
	}
	return out
}

// Sampler samples a set of processes in the background (for the maximum
// RSS between two moments) and on demand at phase boundaries (Mark), for
// CPU time and memory per phase. Pid 0 is this process.
type Sampler struct {
	names []string
	pids  []int
	mu    sync.Mutex
	// series[i] are pid i's samples in time order; failed reads (the
	// process exited) are skipped.
	series [][]ProcSample
	stop   chan struct{}
	done   chan struct{}
}

// NewSampler samples pids[i] under names[i].
func NewSampler(names []string, pids []int) *Sampler {
	return &Sampler{names: names, pids: pids, series: make([][]ProcSample, len(pids))}
}

// Start samples every interval until Stop.
func (s *Sampler) Start(every time.Duration) {
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.Mark()
			}
		}
	}()
}

// Stop ends background sampling; safe without Start.
func (s *Sampler) Stop() {
	if s.stop != nil {
		close(s.stop)
		<-s.done
		s.stop = nil
	}
}

// Mark is a moment at which every process was sampled.
type Mark struct {
	At  time.Time
	idx []int // per process: index of its sample, -1 if the read failed
}

// Mark samples every process now.
func (s *Sampler) Mark() Mark {
	m := Mark{At: time.Now(), idx: make([]int, len(s.pids))}
	samples := make([]ProcSample, len(s.pids))
	errs := make([]error, len(s.pids))
	for i, pid := range s.pids {
		samples[i], errs[i] = ReadProc(pid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.pids {
		m.idx[i] = -1
		if errs[i] == nil {
			s.series[i] = append(s.series[i], samples[i])
			m.idx[i] = len(s.series[i]) - 1
		}
	}
	return m
}

// ProcUsage is one process's use of the machine between two marks.
type ProcUsage struct {
	Name       string  `json:"name"`
	PID        int     `json:"pid"`
	Seconds    float64 `json:"seconds"`     // wall time between the marks
	CPUSeconds float64 `json:"cpu_seconds"` // utime + stime used in it
	Cores      float64 `json:"cores"`       // CPUSeconds / Seconds
	RSSStart   float64 `json:"rss_start_mib"`
	RSSEnd     float64 `json:"rss_end_mib"`
	RSSMax     float64 `json:"rss_max_mib"` // highest sample between the marks
	Samples    int     `json:"samples"`
	Missing    bool    `json:"missing,omitempty"` // a mark could not read it
}

const mib = 1 << 20

// Usage is each process's use between from and to (from before to).
func (s *Sampler) Usage(from, to Mark) []ProcUsage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProcUsage, len(s.pids))
	for i := range s.pids {
		u := ProcUsage{Name: s.names[i], PID: s.pids[i], Seconds: to.At.Sub(from.At).Seconds()}
		a, b := from.idx[i], to.idx[i]
		if a < 0 || b < 0 || b < a {
			u.Missing = true
			out[i] = u
			continue
		}
		sa, sb := s.series[i][a], s.series[i][b]
		u.CPUSeconds = (sb.CPU - sa.CPU).Seconds()
		if u.Seconds > 0 {
			u.Cores = u.CPUSeconds / u.Seconds
		}
		u.RSSStart, u.RSSEnd = float64(sa.RSS)/mib, float64(sb.RSS)/mib
		for _, x := range s.series[i][a : b+1] {
			u.RSSMax = max(u.RSSMax, float64(x.RSS)/mib)
		}
		u.Samples = b - a + 1
		out[i] = u
	}
	return out
}

// SeriesPoint is every process's CPU (cores, over the step ending at At)
// and RSS (MiB, at At), At seconds after the series began.
type SeriesPoint struct {
	At    float64   `json:"at_s"`
	Cores []float64 `json:"cores"`
	RSS   []float64 `json:"rss_mib"`
}

// Series resamples what was sampled between two marks into points about
// step apart (each process's nearest sample at or before each point),
// for a view of CPU and memory over a long phase.
func (s *Sampler) Series(from, to Mark, step time.Duration) []SeriesPoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []SeriesPoint
	prev := make([]ProcSample, len(s.pids))
	for i := range s.pids {
		if from.idx[i] >= 0 {
			prev[i] = s.series[i][from.idx[i]]
		}
	}
	for at := from.At.Add(step); !at.After(to.At.Add(step / 2)); at = at.Add(step) {
		p := SeriesPoint{At: at.Sub(from.At).Seconds(), Cores: make([]float64, len(s.pids)), RSS: make([]float64, len(s.pids))}
		for i := range s.pids {
			if from.idx[i] < 0 || to.idx[i] < 0 {
				continue
			}
			// The last sample at or before at, within the marks.
			cur := prev[i]
			for _, x := range s.series[i][from.idx[i] : to.idx[i]+1] {
				if x.At.After(at) {
					break
				}
				cur = x
			}
			if d := cur.At.Sub(prev[i].At).Seconds(); d > 0 {
				p.Cores[i] = (cur.CPU - prev[i].CPU).Seconds() / d
			}
			p.RSS[i] = float64(cur.RSS) / mib
			prev[i] = cur
		}
		out = append(out, p)
	}
	return out
}
