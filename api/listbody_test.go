package api

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"runtime"
	"testing"
)

// TestGzipCache: one compression per encoding of a service's instances,
// told apart by identity, not content (the view makes a new slice per
// change); the cached prefix plus end(tail) is one valid gzip member of
// head ‖ instances ‖ tail for any tail; the cache drops the lists of
// encodings the view let go before it drops live ones.
func TestGzipCache(t *testing.T) {
	var g gzipCache
	head := []byte(`{"service":"user","instances":`)
	instances := bytes.Repeat([]byte(`{"id":"u1","address":"10.0.0.5:8080"},`), 100)

	first := g.get("user", head, instances)
	again := g.get("user", head, instances)
	if &first.prefix[0] != &again.prefix[0] {
		t.Fatal("the same encoding was compressed twice")
	}
	copied := g.get("user", head, bytes.Clone(instances))
	if &copied.prefix[0] == &first.prefix[0] {
		t.Fatal("a new encoding (equal bytes, another slice) was served from the cache")
	}
	for _, tail := range []string{`,"revision":7}` + "\n", "", `,"revision":9223372036854775807}`} {
		zr, err := gzip.NewReader(bytes.NewReader(append(bytes.Clone(first.prefix), first.end([]byte(tail))...)))
		if err != nil {
			t.Fatal(err)
		}
		zr.Multistream(false)
		got, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("tail %q: %v", tail, err)
		}
		if want := string(head) + string(instances) + tail; string(got) != want {
			t.Fatalf("tail %q: decodes to %d bytes, want %d", tail, len(got), len(want))
		}
	}

	// Fill the cache with encodings nobody holds any more, then one more
	// service: the dead ones go, the live one stays.
	g2 := gzipCache{max: 16}
	live := bytes.Clone(instances)
	g2.get("live", head, live)
	for i := range g2.max - 1 {
		g2.get(fmt.Sprint("gone-", i), head, bytes.Clone(instances))
	}
	runtime.GC()
	g2.get("new", head, bytes.Clone(instances))
	if _, ok := g2.lists["live"]; !ok || len(g2.lists) != 2 {
		t.Fatalf("after the sweep: %d lists, live kept %v; want live and new", len(g2.lists), ok)
	}
	// At the cap with every encoding alive, the cache still stays within it.
	keep := [][]byte{live}
	for i := range 2 * g2.max {
		b := bytes.Clone(instances)
		keep = append(keep, b)
		g2.get(fmt.Sprint("alive-", i), head, b)
		if len(g2.lists) > g2.max {
			t.Fatalf("%d lists cached, the cap is %d", len(g2.lists), g2.max)
		}
	}
	runtime.KeepAlive(keep)
}
