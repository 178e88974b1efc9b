package api

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/labstack/echo/v4"

	"github.com/regd/regd/registry"
)

// Scope is what a token allows. Write implies read; admin implies write.
type Scope int

// Scopes, ordered: a token of a higher scope may do everything a lower one may.
const (
	ScopeNone  Scope = 0
	ScopeRead  Scope = 1
	ScopeWrite Scope = 2
	// ScopeAdmin is what routes of class admin need: membership changes
	// and snapshots. It implies write and read.
	ScopeAdmin Scope = 3
)

func (s Scope) String() string {
	switch s {
	case ScopeRead:
		return "read"
	case ScopeWrite:
		return "write"
	case ScopeAdmin:
		return "admin"
	}
	return "none"
}

// scope is the token scope a route of class k needs: none for the health
// probes (load balancers and orchestrators call them without credentials),
// read for reads and streams (/metrics and /v1/openapi.json included),
// write for writes, admin for admin.
func (k class) scope() Scope {
	switch k {
	case classProbe, classAsset:
		return ScopeNone
	case classRead, classStream:
		return ScopeRead
	case classAdmin:
		return ScopeAdmin
	}
	return ScopeWrite
}

// MinTokenLength is the shortest token a token file may hold. Sixteen
// random characters are far beyond guessing over the network; shorter ones
// are most likely placeholders ("changeme").
const MinTokenLength = 16

// Token is one configured access token.
type Token struct {
	Scope  Scope
	Secret string
}

// TokenError is a problem on one line of a token file. It never contains
// the token itself, so it is safe to print and log.
type TokenError struct {
	Line   int
	Reason string
}

func (e *TokenError) Error() string {
	if e.Line == 0 {
		return e.Reason
	}
	return fmt.Sprintf("line %d: %s", e.Line, e.Reason)
}

// ParseTokens reads a token file: one token per line, `<scope> <token>`,
// scope `read`, `write` or `admin`; blank lines and lines starting with `#` are
// ignored. A token is at least MinTokenLength printable ASCII characters
// without spaces (it travels in an HTTP header). A token listed twice, or
// a file without any token, is an error: both are mistakes an operator
// wants to hear about before the server starts.
func ParseTokens(r io.Reader) ([]Token, error) {
	var tokens []Token
	seen := map[[sha256.Size]byte]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 2 {
			return nil, &TokenError{line, fmt.Sprintf("want `<scope> <token>`, got %d fields", len(fields))}
		}
		var scope Scope
		switch fields[0] {
		case "read":
			scope = ScopeRead
		case "write":
			scope = ScopeWrite
		case "admin":
			scope = ScopeAdmin
		default:
			// The word is not echoed: on a line written the wrong way
			// round it is the token.
			return nil, &TokenError{line, `the scope (first word) must be "read", "write" or "admin"`}
		}
		secret := fields[1]
		if len(secret) < MinTokenLength {
			return nil, &TokenError{line, fmt.Sprintf("token is shorter than %d characters", MinTokenLength)}
		}
		for i := 0; i < len(secret); i++ {
			if c := secret[i]; c < 0x21 || c > 0x7e {
				return nil, &TokenError{line, "token must be printable ASCII without spaces"}
			}
		}
		h := sha256.Sum256([]byte(secret))
		if prev, dup := seen[h]; dup {
			return nil, &TokenError{line, fmt.Sprintf("the same token is already on line %d", prev)}
		}
		seen[h] = line
		tokens = append(tokens, Token{Scope: scope, Secret: secret})
	}
	if err := sc.Err(); err != nil {
		if err == bufio.ErrTooLong {
			return nil, &TokenError{line + 1, "line is too long"}
		}
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the caller names the file
		}
		return nil, &TokenError{0, fmt.Sprintf("cannot read: %v", err)}
	}
	if len(tokens) == 0 {
		return nil, &TokenError{0, "no tokens in the file"}
	}
	return tokens, nil
}

// Auth checks bearer tokens. It is safe for concurrent use, and its tokens
// can be replaced while it serves (SetTokens, on SIGHUP).
type Auth struct {
	tokens      atomic.Pointer[[]hashedToken]
	tokenReads  bool
	realmHeader string
}

type hashedToken struct {
	hash  [sha256.Size]byte
	scope Scope
}

// NewAuth returns an Auth that accepts tokens. When tokenReads is false,
// reads need no token (a token presented on a read must still be valid).
func NewAuth(tokens []Token, tokenReads bool) *Auth {
	a := &Auth{tokenReads: tokenReads, realmHeader: `Bearer realm="regd"`}
	a.SetTokens(tokens)
	return a
}

// SetTokens replaces the accepted tokens; requests in flight finish with
// the set they started with.
func (a *Auth) SetTokens(tokens []Token) {
	hs := make([]hashedToken, len(tokens))
	for i, t := range tokens {
		hs[i] = hashedToken{hash: sha256.Sum256([]byte(t.Secret)), scope: t.Scope}
	}
	a.tokens.Store(&hs)
}

// TokenReads reports whether reads need a token.
func (a *Auth) TokenReads() bool { return a.tokenReads }

// scopeOf returns the scope of the presented token, ScopeNone when it
// matches no configured token. Both sides are hashed first so that the
// comparison is over fixed-length values (ConstantTimeCompare returns early
// on a length mismatch), and every configured token is compared, matched or
// not, so that the time taken does not tell which one matched or how many
// bytes did.
func (a *Auth) scopeOf(presented string) Scope {
	h := sha256.Sum256([]byte(presented))
	scope := 0
	for _, t := range *a.tokens.Load() {
		eq := subtle.ConstantTimeCompare(h[:], t.hash[:])
		scope |= subtle.ConstantTimeSelect(eq, int(t.scope), 0)
	}
	// Tokens are unique (ParseTokens), so at most one matched.
	return Scope(scope)
}

// bearer extracts the token of an `Authorization: Bearer <token>` header.
// ok is false when there is no such header; a header of another scheme
// yields ok true and an empty token, which matches nothing.
func bearer(r *http.Request) (token string, ok bool) {
	h := r.Header.Get(echo.HeaderAuthorization)
	if h == "" {
		return "", false
	}
	scheme, rest, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", true
	}
	return strings.TrimSpace(rest), true
}

// authenticate is the auth middleware. Tokens are accepted only in the
// Authorization header, never in the query string, so they do not end up in
// access logs, proxies' logs or browser history; regd's own request log
// records the path without query or headers.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	a := s.cfg.Auth
	if a == nil {
		return next
	}
	return func(c echo.Context) error {
		need := s.routeOf(c).class.scope()
		if need == ScopeNone {
			return next(c)
		}
		token, presented := bearer(c.Request())
		if !presented {
			if need == ScopeRead && !a.tokenReads {
				return next(c)
			}
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, a.realmHeader)
			return registry.Errorf(registry.KindUnauthenticated, registry.CodeUnauthorized,
				"this request needs a token: send the header Authorization: Bearer <token>")
		}
		got := a.scopeOf(token)
		switch {
		case got == ScopeNone:
			// A wrong token is refused even where none is needed: a
			// misconfigured client hears about it on its first read, not its
			// first write.
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, a.realmHeader+`, error="invalid_token"`)
			return registry.Errorf(registry.KindUnauthenticated, registry.CodeUnauthorized, "the token is not valid")
		case got < need:
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, a.realmHeader+`, error="insufficient_scope", scope="`+need.String()+`"`)
			return registry.Errorf(registry.KindPermissionDenied, registry.CodeForbidden,
				"this token has the %s scope; this request needs the %s scope", got, need)
		}
		return next(c)
	}
}

// tokenInfo is the answer of GET /v1/auth/token.
type tokenInfo struct {
	// Scope is what requests with these credentials may do: "read",
	// "write" or "admin" (later scopes imply the earlier ones).
	Scope string `json:"scope"`
	// Authenticated is true when a valid token was presented; false when
	// none was and the scope is what this node grants without one.
	Authenticated bool `json:"authenticated"`
}

// tokenScope answers GET /v1/auth/token: what the request's own
// credentials allow, so that a client (the web UI) can offer only what it
// may do. Without authentication configured every request may write; with
// it, no token means read where reads are open (where they are not, the
// middleware has already answered 401), and a token its scope (an invalid
// token was answered 401 too). It reveals nothing a client could not learn
// by trying a write, and nothing about other tokens.
func (s *Server) tokenScope(c echo.Context) error {
	info := tokenInfo{Scope: ScopeWrite.String()}
	if a := s.cfg.Auth; a != nil {
		info.Scope = ScopeRead.String()
		if tok, presented := bearer(c.Request()); presented {
			info = tokenInfo{Scope: a.scopeOf(tok).String(), Authenticated: true}
		}
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, info)
}
