package loadgen

import (
	"encoding/binary"
	"net"
	"os"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses, as prctl allows.
	line := "4242 (regd (m1) x) S 1 4242 4242 0 -1 4194560 1522 0 0 0 731 205 0 0 20 0 12 0 115074 2013265920 120000 18446744073709551615\n"
	u, s, err := ParseStat([]byte(line))
	if err != nil || u != 731 || s != 205 {
		t.Fatalf("utime %d stime %d err %v", u, s, err)
	}
	for _, bad := range []string{"", "1 (x S 1 2", "1 (x) S 1 2 3", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 u s"} {
		if _, _, err := ParseStat([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseStatusMemory(t *testing.T) {
	status := "Name:\tregd\nVmPeak:\t  900000 kB\nVmHWM:\t  524288 kB\nVmRSS:\t  262144 kB\nThreads:\t12\n"
	rss, hwm := ParseStatusMemory([]byte(status))
	if rss != 256<<20 || hwm != 512<<20 {
		t.Fatalf("rss %d hwm %d", rss, hwm)
	}
	if rss, hwm := ParseStatusMemory([]byte("Name:\tkthreadd\nState:\tS\n")); rss != 0 || hwm != 0 {
		t.Fatalf("kernel thread: rss %d hwm %d", rss, hwm)
	}
}

func TestTickFromAuxv(t *testing.T) {
	aux := func(pairs ...uint64) []byte {
		b := make([]byte, 8*len(pairs))
		for i, v := range pairs {
			binary.NativeEndian.PutUint64(b[8*i:], v)
		}
		return b
	}
	if d := tickFromAuxv(aux(6, 4096, 17, 100, 0, 0)); d != 10*time.Millisecond {
		t.Fatalf("CLK_TCK 100: %v", d)
	}
	if d := tickFromAuxv(aux(6, 4096, 17, 250, 0, 0)); d != 4*time.Millisecond {
		t.Fatalf("CLK_TCK 250: %v", d)
	}
	if d := tickFromAuxv(aux(6, 4096, 0, 0, 17, 1000)); d != 10*time.Millisecond {
		t.Fatalf("after AT_NULL: %v", d)
	}
	if d := ClockTick(); d <= 0 || d > 10*time.Millisecond {
		t.Fatalf("this machine's tick %v", d)
	}
}

func TestListenInodes(t *testing.T) {
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 81755 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F91 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 99999 1 0000000000000000 20 4 30 10 -1
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 81757 1 0000000000000000 100 0 0 10 0
`
	if got := ListenInodes([]byte(tcp), 8081); len(got) != 1 || got[0] != "81755" {
		t.Fatalf("8081: %v (the established socket on the same port is not a listener)", got)
	}
	if got := ListenInodes([]byte(tcp), 8082); len(got) != 0 {
		t.Fatalf("8082: %v", got)
	}
}

// The sampler and FindListener on this very process: real /proc.
func TestSamplerAndFindListener(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pid, err := FindListener(ln.Addr().(*net.TCPAddr).Port)
	if err != nil || pid != os.Getpid() {
		t.Fatalf("FindListener: %d, %v; want %d", pid, err, os.Getpid())
	}

	s := NewSampler([]string{"self"}, []int{0})
	s.Start(5 * time.Millisecond)
	defer s.Stop()
	a := s.Mark()
	start, err := ReadProc(0)
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the kernel has charged at least two ticks, the
	// sampler has taken a few samples meanwhile (under load its goroutine
	// may wait for a while) and a tick fell between two of them: the
	// kernel charges CPU a tick at a time, so samples 5 ms apart can all
	// see the same figure while the ticks land before the first or after
	// the last. Bounded: a sampler that never sees CPU fails below.
	busyIn := func(series []SeriesPoint) float64 {
		var busy float64
		for _, p := range series {
			busy = max(busy, p.Cores[0])
		}
		return busy
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		now, err := ReadProc(0)
		if err != nil {
			t.Fatal(err)
		}
		m := s.Mark()
		if now.CPU-start.CPU >= 2*ClockTick() && s.Usage(a, m)[0].Samples >= 4 && busyIn(s.Series(a, m, 5*time.Millisecond)) > 0 {
			break
		}
	}
	b := s.Mark()
	u := s.Usage(a, b)[0]
	if u.Missing || u.CPUSeconds < 2*ClockTick().Seconds() || u.Cores <= 0 || u.RSSEnd <= 0 || u.RSSMax < u.RSSEnd || u.Samples < 2 {
		t.Fatalf("%+v", u)
	}
	series := s.Series(a, b, 5*time.Millisecond)
	if len(series) == 0 || len(series[0].Cores) != 1 || series[len(series)-1].RSS[0] <= 0 {
		t.Fatalf("series %+v", series)
	}
	if busyIn(series) <= 0 {
		t.Fatalf("no CPU in the series of a busy loop: %+v", series)
	}
	if _, err := ReadProc(1 << 30); err == nil {
		t.Fatal("no error for a pid that cannot exist")
	}
}
