package api

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"io"
	"net/http"
	"strconv"
	"sync"
	"weak"

	"github.com/labstack/echo/v4"
)

// An instance list is {"service":S,"instances":I,"revision":R}. I is the
// view's shared encoding of the service's instances (View.InstancesJSON: a
// new slice each time the service changes, the same one until then), R the
// view's revision, which moves with every change to any service. So the
// answer is written around I without copying it, and its gzip form is
// cached per service and per I, beside the view's encoding (kept here in
// api, not in registry: compression is HTTP's business, and the view stays
// the registry's): the gzip header and deflate("{"service":S,"instances":I)
// up to a sync flush, plus the CRC-32 of those bytes. Per request only the
// tail is added, as a final stored deflate block (RFC 1951 §3.2.4), and the
// gzip trailer (RFC 1952 §2.3). Every change of the service costs one
// compression, whatever the number of requests; a blocking query that
// wakes a thousand clients on one change compresses once.

// gzipCacheLevel is the level of cached lists: compressed once per change,
// they are worth the default level's better ratio.
const gzipCacheLevel = gzip.DefaultCompression

// maxGzipCacheLists bounds the number of cached lists (one per service).
// Lists of services that changed since are dropped first.
const maxGzipCacheLists = 4096

var gzipCacheWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(io.Discard, gzipCacheLevel) // a valid level: no error
	return zw
}}

// writeList writes one service's instance list (see above). cacheKey names
// the list's compressed form in the cache ("" for a list made for this
// request alone, compressed without the cache). It returns the error of a
// write to the client (gone, or too slow).
func (s *Server) writeList(c echo.Context, service, cacheKey string, instances []byte, rev int64) error {
	name, err := json.Marshal(service)
	if err != nil {
		return err
	}
	head := make([]byte, 0, len(name)+32)
	head = append(head, `{"service":`...)
	head = append(head, name...)
	head = append(head, `,"instances":`...)
	tail := make([]byte, 0, 32)
	tail = append(tail, `,"revision":`...)
	tail = strconv.AppendInt(tail, rev, 10)
	tail = append(tail, "}\n"...)

	w := c.Response()
	w.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	parts := [][]byte{head, instances, tail}
	size := len(head) + len(instances) + len(tail)
	if size >= minGzipSize && c.Request().Method != http.MethodHead && acceptsGzip(c.Request()) {
		var z gzipPrefix
		if cacheKey != "" {
			z = s.gzipped.get(cacheKey, head, instances)
		} else {
			z = compressPrefix(head, instances)
		}
		end := z.end(tail)
		w.Header().Set(echo.HeaderContentEncoding, "gzip")
		parts, size = [][]byte{z.prefix, end}, len(z.prefix)+len(end)
	}
	w.Header().Set(echo.HeaderContentLength, strconv.Itoa(size))
	w.WriteHeader(http.StatusOK)
	for _, part := range parts {
		if _, err := w.Write(part); err != nil {
			return err // the client is gone
		}
	}
	return nil
}

// gzipCache holds the compressed lists, by service and status filter.
type gzipCache struct {
	mu    sync.Mutex
	lists map[string]*gzipList
	max   int // 0: maxGzipCacheLists
}

// gzipList is one service's compressed list. src identifies the view's
// encoding it was made from without keeping it alive: a weak pointer to its
// first byte, which compares equal only to one made from the same
// allocation, even after that was freed and its memory reused.
type gzipList struct {
	mu     sync.Mutex
	src    weak.Pointer[byte]
	srcLen int
	gzipPrefix
}

// gzipPrefix is the compressed head of one list; never modified once made.
type gzipPrefix struct {
	prefix []byte // gzip header, deflate(head ‖ instances), sync flush
	crc    uint32 // CRC-32 of head ‖ instances
	size   int    // len(head ‖ instances)
}

// get returns the compressed head ‖ instances, compressing it if the cache
// does not hold it for this encoding of the service's instances. Requests
// for the same list wait for one compression; others go on. key names the
// list (service and status filter); instances must not be empty.
func (g *gzipCache) get(key string, head, instances []byte) gzipPrefix {
	src := weak.Make(&instances[0])
	g.mu.Lock()
	l := g.lists[key]
	if l == nil {
		l = &gzipList{}
		g.add(key, l)
	}
	g.mu.Unlock()

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.src != src || l.srcLen != len(instances) {
		l.gzipPrefix = compressPrefix(head, instances)
		l.src, l.srcLen = src, len(instances)
	}
	return l.gzipPrefix
}

// add caches l, first dropping the lists of encodings the view no longer
// holds, then, at the cap, any one.
func (g *gzipCache) add(service string, l *gzipList) {
	if g.lists == nil {
		g.lists = make(map[string]*gzipList)
	}
	limit := g.max
	if limit == 0 {
		limit = maxGzipCacheLists
	}
	if len(g.lists) >= limit {
		for name, old := range g.lists {
			if old.mu.TryLock() {
				stale := old.src.Value() == nil
				old.mu.Unlock()
				if stale {
					delete(g.lists, name)
				}
			}
		}
		for name := range g.lists {
			if len(g.lists) < limit {
				break
			}
			delete(g.lists, name)
		}
	}
	g.lists[service] = l
}

func compressPrefix(head, instances []byte) gzipPrefix {
	var buf bytes.Buffer
	buf.Grow(len(instances) / 6)
	zw := gzipCacheWriters.Get().(*gzip.Writer)
	defer gzipCacheWriters.Put(zw)
	zw.Reset(&buf)
	// Writes to a bytes.Buffer do not fail.
	_, _ = zw.Write(head)
	_, _ = zw.Write(instances)
	_ = zw.Flush() // a sync flush: the deflate stream ends byte-aligned, not final
	zw.Reset(io.Discard)
	return gzipPrefix{
		prefix: buf.Bytes(),
		crc:    crc32.Update(crc32.ChecksumIEEE(head), crc32.IEEETable, instances),
		size:   len(head) + len(instances),
	}
}

// end is what completes the gzip stream after p.prefix: tail as a final
// stored block (after a sync flush the stream is at a byte boundary, so the
// block header is the byte 0x01: BFINAL 1, BTYPE 00, padding), then the
// gzip trailer, CRC-32 and length of all the data, both little-endian.
// tail is short (the revision), well under a stored block's 65535 bytes.
func (p gzipPrefix) end(tail []byte) []byte {
	n := uint16(len(tail))
	out := make([]byte, 0, 5+len(tail)+8)
	out = append(out, 0x01)
	out = binary.LittleEndian.AppendUint16(out, n)
	out = binary.LittleEndian.AppendUint16(out, ^n)
	out = append(out, tail...)
	out = binary.LittleEndian.AppendUint32(out, crc32.Update(p.crc, crc32.IEEETable, tail))
	out = binary.LittleEndian.AppendUint32(out, uint32(p.size+len(tail)))
	return out
}
