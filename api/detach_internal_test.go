package api

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestStreamConnNoLastChunkAfterCutWrite: a write that times out part-way
// through a chunk leaves the client inside that chunk; the last chunk
// ("0\r\n\r\n") written after it would be read as the cut event's rest (an
// id line "id: 12" read on as "id: 120"). After a failed write, close only
// closes. Real loopback sockets; the client does not read until the write
// has timed out.
func TestStreamConnNoLastChunkAfterCutWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := &streamConn{conn: srv, raw: rawConn(srv), chunked: true, timeout: 100 * time.Millisecond, goneC: make(chan struct{})}
	// Far more than loopback's socket buffers hold: the write times out
	// with part of the chunk sent.
	f := &frame{b: make([]byte, chunkRoom, 64<<20)}
	f.appendString("id: 12\n")
	f.appendString(strings.Repeat("x", 48<<20))
	if err := c.send(f); err == nil {
		t.Fatal("a 48 MiB chunk to a client that reads nothing was written within 100 ms")
	}
	c.close()
	got, err := io.ReadAll(client)
	if err != nil {
		t.Fatalf("reading what the server sent: %v", err)
	}
	if len(got) == 0 || len(got) >= len(f.chunk()) {
		t.Fatalf("read %d bytes: want part of the chunk", len(got))
	}
	if bytes.HasSuffix(got, []byte("0\r\n\r\n")) {
		t.Fatal("the last chunk was written after a chunk cut short")
	}
	// The control: a stream whose writes all succeeded ends with it.
	client2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client2.Close()
	srv2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c2 := &streamConn{conn: srv2, raw: rawConn(srv2), chunked: true, timeout: time.Second, goneC: make(chan struct{})}
	f2 := &frame{b: make([]byte, chunkRoom, 64)}
	f2.appendString("id: 12\n\n")
	if err := c2.send(f2); err != nil {
		t.Fatal(err)
	}
	c2.close()
	got, err = io.ReadAll(client2)
	if err != nil || !bytes.HasSuffix(got, []byte("0\r\n\r\n")) {
		t.Fatalf("a whole stream: %q %v; want it to end with the last chunk", got, err)
	}
}
