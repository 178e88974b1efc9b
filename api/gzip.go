package api

import (
	"compress/gzip"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/labstack/echo/v4"
)

// Compression: JSON responses (and the web UI's HTML, CSS, JavaScript and
// SVG) of minGzipSize or more are gzip-compressed
// when the request's Accept-Encoding allows gzip (the contract; a
// 1,500-instance list is 320 KB of JSON and about a tenth of that
// compressed). Never a stream (class stream: an SSE event must reach the
// client when it is written, not when a compressor's block fills), never a
// HEAD (it has no body; its headers are those of the uncompressed answer),
// never an answer that already has a Content-Encoding (/metrics: promhttp
// compresses itself). Instance lists, the large and frequent answers, are
// compressed once per change of the service (listbody.go); everything else
// as it is written.

// minGzipSize is the smallest body that is compressed: below 1 KiB, gzip's
// 18 bytes of framing and the CPU are not worth the few bytes saved.
const minGzipSize = 1 << 10

// gzipLevel is for answers compressed as they are written: the fastest
// level, as web servers use for dynamic content (nginx's gzip_comp_level
// default).
const gzipLevel = gzip.BestSpeed

var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(io.Discard, gzipLevel) // a valid level: no error
	return zw
}}

// acceptsGzip reports whether the request's Accept-Encoding allows gzip
// (RFC 9110 §12.5.3): "gzip" or "x-gzip" with a q-value above 0, or "*"
// above 0 when gzip is not listed.
func acceptsGzip(r *http.Request) bool {
	star := false
	for _, part := range strings.Split(r.Header.Get(echo.HeaderAcceptEncoding), ",") {
		coding, params, _ := strings.Cut(part, ";")
		coding = strings.ToLower(strings.TrimSpace(coding))
		ok := qNonZero(params)
		switch coding {
		case "gzip", "x-gzip":
			return ok
		case "*":
			star = ok
		}
	}
	return star
}

// qNonZero reads a q parameter ("q=0.5"); absent means 1.
func qNonZero(params string) bool {
	for _, p := range strings.Split(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(k, "q") {
			q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return err == nil && q > 0
		}
	}
	return true
}

// compress is the compression middleware. Every answer that could have
// been compressed says Vary: Accept-Encoding, so that caches keep the two
// forms apart.
func (s *Server) compress(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.routeOf(c).class == classStream {
			return next(c)
		}
		res := c.Response()
		res.Header().Add(echo.HeaderVary, echo.HeaderAcceptEncoding)
		if c.Request().Method == http.MethodHead || !acceptsGzip(c.Request()) {
			return next(c)
		}
		gw := &gzipWriter{ResponseWriter: res.Writer}
		res.Writer = gw
		err := next(c)
		gw.finish()
		// Errors are written after this, by the error exit: uncompressed
		// (they are small) and straight to the connection.
		res.Writer = gw.ResponseWriter
		return err
	}
}

// gzipWriter holds the status and up to minGzipSize bytes of the body until
// it knows whether to compress: only a JSON answer with a body of at least
// minGzipSize and no Content-Encoding of its own is.
type gzipWriter struct {
	http.ResponseWriter
	status  int    // held until the decision
	pending []byte // body held until the decision
	decided bool
	zw      *gzip.Writer // nil: passing through
}

func (w *gzipWriter) WriteHeader(code int) {
	if w.decided {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	if w.status == 0 {
		w.status = code
	}
}

func (w *gzipWriter) Write(p []byte) (int, error) {
	if !w.decided {
		if !w.compressible() {
			if err := w.decide(false); err != nil {
				return 0, err
			}
		} else {
			w.pending = append(w.pending, p...)
			if len(w.pending) < minGzipSize {
				return len(p), nil
			}
			return len(p), w.decide(true)
		}
	}
	if w.zw != nil {
		return w.zw.Write(p)
	}
	return w.ResponseWriter.Write(p)
}

// compressible: JSON or a UI file, no encoding of its own, a status with a body, and
// not declared (Content-Length) smaller than minGzipSize.
func (w *gzipWriter) compressible() bool {
	h := w.Header()
	if h.Get(echo.HeaderContentEncoding) != "" {
		return false
	}
	switch {
	case w.status == http.StatusNoContent, w.status == http.StatusNotModified, w.status >= 100 && w.status < 200:
		return false
	case w.status == http.StatusPartialContent:
		return false // a range of the uncompressed file (RFC 9110 §14)
	}
	if n, err := strconv.Atoi(h.Get(echo.HeaderContentLength)); err == nil && n < minGzipSize {
		return false
	}
	mt, _, _ := mime.ParseMediaType(h.Get(echo.HeaderContentType))
	switch mt {
	case "text/html", "text/css", "text/javascript", "image/svg+xml":
		return true // the web UI's files (ui/): text that shrinks to a third
	}
	return mt == echo.MIMEApplicationJSON || strings.HasSuffix(mt, "+json")
}

// decide writes the held status and body, compressed or not.
func (w *gzipWriter) decide(zip bool) error {
	w.decided = true
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	if zip {
		h := w.Header()
		h.Set(echo.HeaderContentEncoding, "gzip")
		h.Del(echo.HeaderContentLength)
		w.zw = gzipWriters.Get().(*gzip.Writer)
		w.zw.Reset(w.ResponseWriter)
	}
	w.ResponseWriter.WriteHeader(status)
	pending := w.pending
	w.pending = nil
	if len(pending) == 0 {
		return nil
	}
	var err error
	if w.zw != nil {
		_, err = w.zw.Write(pending)
	} else {
		_, err = w.ResponseWriter.Write(pending)
	}
	return err
}

// finish ends the answer: the held one, if the handler wrote any, or the
// gzip stream.
func (w *gzipWriter) finish() {
	if !w.decided {
		if w.status == 0 && len(w.pending) == 0 {
			return // nothing written: an error, which the error exit writes
		}
		_ = w.decide(false)
		return
	}
	if w.zw != nil {
		_ = w.zw.Close()
		w.zw.Reset(io.Discard) // drop the connection before pooling
		gzipWriters.Put(w.zw)
		w.zw = nil
	}
}

// FlushError sends what is held or buffered now (echo's Flush and
// http.ResponseController call it).
func (w *gzipWriter) FlushError() error {
	if !w.decided {
		if err := w.decide(false); err != nil {
			return err
		}
	}
	if w.zw != nil {
		if err := w.zw.Flush(); err != nil {
			return err
		}
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (w *gzipWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
