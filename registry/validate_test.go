package registry_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/regd/regd/registry"
)

// wantInvalid fails t unless err is a *registry.Error of KindInvalid with the
// given code and a non-empty message.
func wantInvalid(t *testing.T, err error, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	var re *registry.Error
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not a *registry.Error", err, err)
	}
	if re.Kind != registry.KindInvalid || re.Code != code || re.Message == "" {
		t.Fatalf("got kind %d code %q message %q, want kind %d (invalid) code %q", re.Kind, re.Code, re.Message, registry.KindInvalid, code)
	}
}

func TestValidateNames(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		valid bool
	}{
		{"one letter", "a", true},
		{"dash", "user-b", true},
		{"all allowed classes", "A.b_c-9", true},
		{"128 chars", strings.Repeat("x", 128), true},
		{"dots inside", "a..b", true},
		{"three dots", "...", true},
		{"empty", "", false},
		{"dot", ".", false},
		{"dot dot", "..", false},
		{"129 chars", strings.Repeat("x", 129), false},
		{"slash", "a/b", false},
		{"space", "a b", false},
		{"percent-encoded slash", "a%2Fb", false},
		{"non-ASCII", "ü", false},
		{"NUL byte", "a\x00", false},
		{"newline", "a\n", false},
		{"colon", "a:b", false},
		{"backslash", `a\b`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Service names and instance ids follow the same rule; each
			// reports its own code.
			for _, v := range []struct {
				what string
				fn   func(string) error
				code string
			}{
				{"service", registry.ValidateService, registry.CodeInvalidService},
				{"id", registry.ValidateID, registry.CodeInvalidID},
			} {
				err := v.fn(tc.in)
				if tc.valid {
					if err != nil {
						t.Fatalf("%s %q: unexpected error %v", v.what, tc.in, err)
					}
					continue
				}
				wantInvalid(t, err, v.code)
			}
		})
	}
}

func TestValidateAddress(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	host253 := strings.Join([]string{label63, label63, label63, strings.Repeat("b", 61)}, ".") // 253 bytes
	host254 := host253 + "c"
	tests := []struct {
		name  string
		in    string
		valid bool
	}{
		{"IPv4", "10.0.0.5:8080", true},
		{"IPv6 loopback", "[::1]:80", true},
		// A link-local address with its zone: what net.Dial accepts
		// (RFC 6874 style); the zone is host-local but well-formed.
		{"IPv6 with zone", "[fe80::1%eth0]:80", true},
		{"IPv4-mapped IPv6", "[::ffff:10.0.0.5]:80", true},
		{"DNS name", "host.example.com:1", true},
		{"localhost max port", "localhost:65535", true},
		{"dash in label", "a-b.c:443", true},
		{"fully qualified with final dot", "host.example.com.:80", true},
		{"253-byte host", host253 + ":80", true},
		{"63-byte label", label63 + ".com:80", true},
		{"digits below the top label", "10.0.0.5.nip.io:80", true},
		{"top label starts with a digit", "host.3com:80", true},
		// Underscores, as resolvers accept them (issue 11): container
		// host names and SRV-style labels.
		{"underscore", "host_x:80", true},
		{"compose host name", "my_host:80", true},
		{"SRV-style labels", "_http._tcp.example.com:80", true},
		{"underscore label", "_:80", true},

		{"empty", "", false},
		{"no port", "10.0.0.5", false},
		{"empty host", ":80", false},
		{"empty port", "host:", false},
		{"port 0", "host:0", false},
		{"port 65536", "host:65536", false},
		{"port with leading zero", "host:080", false},
		{"port with plus sign", "host:+80", false},
		{"port with minus sign", "host:-80", false},
		{"port not a number", "host:http", false},
		{"port too many digits", "host:000080", false},
		{"unbracketed IPv6", "::1:80", false},
		{"bracketed IPv4", "[1.2.3.4]:80", false},
		{"bracketed DNS name", "[host]:80", false},
		{"bracketed IPv6 no port", "[::1]", false},
		{"IPv6 with empty zone", "[fe80::1%]:80", false},
		{"IPv6 zone with newline", "[fe80::1%\n]:80", false},
		{"IPv6 zone with NUL", "[fe80::1%\x00]:80", false},
		{"IPv6 zone with space and slash", "[fe80::1%a b/c]:80", false},
		{"IPv6 zone with colon", "[fe80::1%eth0:80]:80", false},
		{"IPv4 octet over 255", "256.1.1.1:80", false},
		{"IPv4 with leading zero", "010.0.0.1:80", false},
		{"five dotted numbers", "1.2.3.4.5:80", false},
		{"all-digit host", "123:80", false},
		{"label starts with dash", "-host:80", false},
		{"label ends with dash", "host-:80", false},
		{"underscore and dash at a label's end", "my_host-:80", false},
		{"underscore and a dot-less all-digit top", "a_b.123:80", false},
		{"empty label", "a..b:80", false},
		{"only a dot", ".:80", false},
		{"64-byte label", strings.Repeat("a", 64) + ".com:80", false},
		{"URL with scheme", "http://x:80", false},
		{"path after port", "x:80/path", false},
		{"space in host", "a b:80", false},
		{"leading space", " host:80", false},
		{"trailing space", "host:80 ", false},
		{"non-ASCII host", "hüst:80", false},
		{"254-byte host", host254 + ":80", false},
		{"very long host", strings.Repeat("a", 300) + ":80", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := registry.ValidateAddress(tc.in)
			if tc.valid {
				if err != nil {
					t.Fatalf("ValidateAddress(%q): unexpected error %v", tc.in, err)
				}
				return
			}
			wantInvalid(t, err, registry.CodeInvalidAddress)
		})
	}
}

func TestResolveTTL(t *testing.T) {
	ptr := func(v int64) *int64 { return &v }
	tests := []struct {
		name  string
		in    *int64
		want  int64
		valid bool
	}{
		{"absent is the default", nil, 10, true},
		{"minimum", ptr(2), 2, true},
		{"typical", ptr(30), 30, true},
		{"maximum", ptr(3600), 3600, true},
		{"below minimum", ptr(1), 0, false},
		{"zero", ptr(0), 0, false},
		{"negative", ptr(-5), 0, false},
		{"above maximum", ptr(3601), 0, false},
		{"huge", ptr(1 << 62), 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := registry.ResolveTTL(tc.in)
			if !tc.valid {
				wantInvalid(t, err, registry.CodeInvalidTTL)
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ResolveTTL = %d, %v; want %d, nil", got, err, tc.want)
			}
		})
	}
}

func TestValidateMetadata(t *testing.T) {
	pairs := func(n int) map[string]string {
		md := make(map[string]string, n)
		for i := range n {
			md[fmt.Sprintf("k%02d", i)] = "v"
		}
		return md
	}
	// sized is one pair whose key and value add up to n bytes.
	sized := func(n int) map[string]string {
		return map[string]string{"k": strings.Repeat("v", n-1)}
	}
	tests := []struct {
		name  string
		in    map[string]string
		valid bool
	}{
		{"nil", nil, true},
		{"empty", map[string]string{}, true},
		{"one pair", map[string]string{"zone": "a"}, true},
		{"empty value", map[string]string{"zone": ""}, true},
		{"64 pairs", pairs(64), true},
		{"4096 bytes", sized(4096), true},
		{"128-byte key", map[string]string{strings.Repeat("k", 128): "v"}, true},
		{"UTF-8 key and value", map[string]string{"zöne": "ä"}, true},
		{"65 pairs", pairs(65), false},
		{"4097 bytes", sized(4097), false},
		{"4097 bytes over many pairs", func() map[string]string {
			md := pairs(0)
			for i := range 4 {
				md[fmt.Sprintf("k%d", i)] = strings.Repeat("v", 1024-2)
			} // 4 * 1024 = 4096
			md["x"] = "" // +1
			return md
		}(), false},
		{"empty key", map[string]string{"": "v"}, false},
		{"129-byte key", map[string]string{strings.Repeat("k", 129): "v"}, false},
		{"newline in key", map[string]string{"a\nb": "v"}, false},
		{"NUL in key", map[string]string{"a\x00": "v"}, false},
		{"DEL in key", map[string]string{"a\x7f": "v"}, false},
		{"invalid UTF-8 key", map[string]string{"a\xff": "v"}, false},
		{"invalid UTF-8 value", map[string]string{"a": "\xff"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := registry.ValidateMetadata(tc.in)
			if tc.valid {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			wantInvalid(t, err, registry.CodeInvalidMetadata)
		})
	}
}

// TestMessagesCutOnCharacterBoundaries: an error message that shows a
// shortened piece of user input never cuts a UTF-8 character in half
// (which strconv.Quote would show as \x escapes of half a character),
// wherever the cut falls inside a character of 2, 3 or 4 bytes.
func TestMessagesCutOnCharacterBoundaries(t *testing.T) {
	for _, char := range []string{"é", "€", "😀"} {
		for pad := range utf8.RuneLen([]rune(char)[0]) {
			input := strings.Repeat("k", pad) + strings.Repeat(char, 200)
			for _, tc := range []struct {
				what string
				err  error
			}{
				{"over-long metadata key", registry.ValidateMetadata(map[string]string{input: "v"})},
				{"address", registry.ValidateAddress(input + ":80")},
				{"service name", registry.ValidateService(input)},
			} {
				var re *registry.Error
				if !errors.As(tc.err, &re) {
					t.Fatalf("%s %q...: error %v, want a registry error", tc.what, input[:8], tc.err)
				}
				if strings.Contains(re.Message, `\x`) || !utf8.ValidString(re.Message) {
					t.Errorf("%s, %d-byte character after %d ASCII bytes: message cuts a character: %s", tc.what, len(char), pad, re.Message)
				}
				// The cut keeps as much as fits: at least 61 of the 64
				// bytes, i.e. never more than one character less.
				shown := strings.Count(re.Message, char)
				if want := (64 - pad) / len(char); shown < want {
					t.Errorf("%s: shows %d characters of the input, want %d: %s", tc.what, shown, want, re.Message)
				}
				if !strings.Contains(re.Message, `..."`) {
					t.Errorf("%s: a shortened input is not marked with ...: %s", tc.what, re.Message)
				}
			}
		}
	}
}
