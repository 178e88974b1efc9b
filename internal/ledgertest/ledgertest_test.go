package ledgertest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func entry(service, id, lease, addr string, rev int64) string {
	return fmt.Sprintf(`{"service":%q,"id":%q,"address":%q,"lease_id":%q,"expired_at":"2026-01-02T03:04:05Z","reported_by":"m1","revision":%d,"cause":"ttl"}`,
		service, id, addr, lease, rev)
}

func ledger(entries ...string) []byte {
	return []byte(`{"expirations":[` + strings.Join(entries, ",") + `]}`)
}

func TestDecodeRefusesWhatTheContractDoesNot(t *testing.T) {
	good := entry("web", "w1", "7", "10.0.0.1:80", 12)
	for name, body := range map[string][]byte{
		"null array":        []byte(`{"expirations":null}`),
		"no array":          []byte(`{}`),
		"not JSON":          []byte(`expirations`),
		"time not RFC 3339": ledger(strings.Replace(good, "2026-01-02T03:04:05Z", "2026-01-02 03:04:05", 1)),
		"lease as a number": ledger(strings.Replace(good, `"lease_id":"7"`, `"lease_id":7`, 1)),
		"lease zero":        ledger(strings.Replace(good, `"lease_id":"7"`, `"lease_id":"0"`, 1)),
		"empty address":     ledger(strings.Replace(good, `"address":"10.0.0.1:80"`, `"address":""`, 1)),
		"no reporter":       ledger(strings.Replace(good, `"reported_by":"m1",`, ``, 1)),
		"revision 0":        ledger(strings.Replace(good, `"revision":12`, `"revision":0`, 1)),
	} {
		if _, err := decode(body); err == nil {
			t.Errorf("%s: decoded %s", name, body)
		}
	}
	es, err := decode(ledger(good))
	if err != nil || len(es) != 1 || es[0].Expiry() != (Expiry{"web", "w1", "7"}) || es[0].Cause != "ttl" || string(es[0].Raw) != good {
		t.Fatalf("decode of a good ledger: %+v %v", es, err)
	}
}

func TestCheck(t *testing.T) {
	w1, w2 := Expiry{"web", "w1", "7"}, Expiry{"web", "w2", "8"}
	x := Expected{
		Want:      map[Expiry]string{w1: "10.0.0.1:80", w2: "10.0.0.2:80"},
		Forbidden: map[string]bool{"web/gone": true},
		Reporters: map[string]bool{"m1": true},
	}
	e1, e2 := entry("web", "w1", "7", "10.0.0.1:80", 12), entry("web", "w2", "8", "10.0.0.2:80", 15)
	for _, tc := range []struct {
		name    string
		body    []byte
		x       Expected
		missing bool   // only pending: waiting can still make it pass
		wantErr string // "" for none
	}{
		{"exactly the want", ledger(e2, e1), x, false, ""},
		{"one not reported yet", ledger(e1), x, true, "1 of 2 expiries not reported"},
		{"nothing yet", ledger(), x, true, "2 of 2"},
		{"twice", ledger(e2, e1, e1), x, false, "reported 2 times"},
		{"forbidden", ledger(e2, entry("web", "gone", "9", "10.0.0.9:80", 13), e1), x, false, "must never be reported"},
		{"unexpected", ledger(e2, entry("web", "w3", "9", "10.0.0.3:80", 13), e1), x, false, "unexpected report"},
		{"old lease", ledger(e2, entry("web", "w1", "6", "10.0.0.1:80", 12)), x, false, "unexpected report"},
		{"wrong address", ledger(e2, entry("web", "w1", "7", "10.0.0.9:80", 12)), x, false, "address"},
		{"oldest first", ledger(e1, e2), x, false, "not newest first"},
		{"unknown reporter", ledger(e2, strings.Replace(e1, `"m1"`, `"m9"`, 1)), x, false, "not a member"},
		{"each refuses", ledger(e2, e1), Expected{Want: x.Want, Each: func(e Entry) error {
			if e.ID == "w2" {
				return errors.New("no")
			}
			return nil
		}}, false, "report web/w2@8: no"},
	} {
		es, err := decode(tc.body)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		err = tc.x.Check(es)
		var missing *MissingError
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.wantErr)
		case err != nil && errors.As(err, &missing) != tc.missing:
			t.Errorf("%s: %v is pending=%v, want %v", tc.name, err, !tc.missing, tc.missing)
		}
	}
}

func TestSame(t *testing.T) {
	a, _ := decode(ledger(entry("web", "w1", "7", "10.0.0.1:80", 12)))
	b, _ := decode([]byte(`{ "expirations": [ ` + entry("web", "w1", "7", "10.0.0.1:80", 12) + ` ] }`))
	c, _ := decode(ledger(strings.Replace(entry("web", "w1", "7", "10.0.0.1:80", 12), `"cause":"ttl"`, `"cause":"check_failed"`, 1)))
	if err := Same(a, b); err != nil {
		t.Errorf("the same entries differ: %v", err)
	}
	if err := Same(a, c); err == nil {
		t.Error("entries that differ in their cause are the same")
	}
	if err := Same(a, nil); err == nil {
		t.Error("a ledger is the same as an empty one")
	}
}
