package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/regd/regd/api"
)

var openAPIMethods = []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}

func loadOpenAPI(t *testing.T) (raw []byte, doc map[string]any) {
	t.Helper()
	raw, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	if v, _ := doc["openapi"].(string); v != "3.0.3" {
		t.Fatalf("openapi version %q, want 3.0.3", v)
	}
	return raw, doc
}

// TestOpenAPIMatchesRoutes holds the document to the route table: every
// route is described, and nothing that is not a route.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	_, doc := loadOpenAPI(t)
	paths, ok := doc["paths"].(map[string]any)
	if !ok || len(paths) == 0 {
		t.Fatal("openapi.json has no paths")
	}
	param := regexp.MustCompile(`\{([A-Za-z0-9_]+)\}`)
	documented := map[string]bool{}
	for p, item := range paths {
		ops, ok := item.(map[string]any)
		if !ok {
			t.Fatalf("path %s is not an object", p)
		}
		echoPath := param.ReplaceAllString(p, ":$1")
		for m := range ops {
			if slices.Contains(openAPIMethods, m) {
				documented[strings.ToUpper(m)+" "+echoPath] = true
			}
		}
	}
	served := map[string]bool{}
	for _, r := range api.New(api.Config{}).Routes() {
		served[r] = true
	}
	if len(served) < 14 {
		t.Fatalf("Routes() returned only %d routes: %v", len(served), served)
	}
	for r := range served {
		if !documented[r] {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for r := range documented {
		if !served[r] {
			t.Errorf("openapi.json describes %s, which is not a route", r)
		}
	}
	for _, want := range []string{"GET /v1/openapi.json", "GET /v1/watch", "GET /v1/services/:service/watch", "GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/expirations", "GET /v1/cluster"} {
		if !served[want] {
			t.Errorf("the server does not serve %s", want)
		}
	}
}

// TestOpenAPIWellFormed checks what a generator trips over: dangling
// $refs, undeclared path parameters, operations without responses.
func TestOpenAPIWellFormed(t *testing.T) {
	_, doc := loadOpenAPI(t)
	refs := 0
	var walk func(at string, v any)
	walk = func(at string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"]; ok {
				s, _ := ref.(string)
				if _, err := resolvePointer(doc, s); err != nil {
					t.Errorf("%s: $ref %q: %v", at, s, err)
				}
				refs++
			}
			for k, c := range v {
				walk(at+"/"+k, c)
			}
		case []any:
			for i, c := range v {
				walk(at+"/"+strconv.Itoa(i), c)
			}
		}
	}
	walk("#", doc)
	if refs < 20 {
		t.Fatalf("only %d $refs found; the walk is broken", refs)
	}

	for _, name := range []string{"Instance", "InstanceList", "ServiceList", "Expiration", "ClusterStatus", "Error", "Registration"} {
		if _, err := resolvePointer(doc, "#/components/schemas/"+name); err != nil {
			t.Errorf("schema %s: %v", name, err)
		}
	}
	for _, name := range []string{"index", "wait", "stale", "min_revision", "Last-Event-ID", "after", "reset", "service", "limit"} {
		if _, err := resolvePointer(doc, "#/components/parameters/"+name); err != nil {
			t.Errorf("parameter %s: %v", name, err)
		}
	}

	param := regexp.MustCompile(`\{([A-Za-z0-9_]+)\}`)
	for p, item := range doc["paths"].(map[string]any) {
		item := item.(map[string]any)
		for _, m := range openAPIMethods {
			op, ok := item[m].(map[string]any)
			if !ok {
				continue
			}
			where := strings.ToUpper(m) + " " + p
			responses, _ := op["responses"].(map[string]any)
			if len(responses) == 0 {
				t.Errorf("%s has no responses", where)
			}
			hasSuccess := false
			for code := range responses {
				hasSuccess = hasSuccess || code[0] == '2'
			}
			if !hasSuccess {
				t.Errorf("%s has no 2xx response", where)
			}
			// Every {name} in the template is a declared path parameter.
			declared := map[string]bool{}
			for _, list := range []any{item["parameters"], op["parameters"]} {
				ps, _ := list.([]any)
				for _, pv := range ps {
					pm, _ := pv.(map[string]any)
					if ref, ok := pm["$ref"].(string); ok {
						r, err := resolvePointer(doc, ref)
						if err != nil {
							continue // reported above
						}
						pm, _ = r.(map[string]any)
					}
					if pm["in"] == "path" {
						if pm["required"] != true {
							t.Errorf("%s: path parameter %v is not required", where, pm["name"])
						}
						declared[pm["name"].(string)] = true
					}
				}
			}
			for _, mm := range param.FindAllStringSubmatch(p, -1) {
				if !declared[mm[1]] {
					t.Errorf("%s: path parameter {%s} is not declared", where, mm[1])
				}
			}
			for name := range declared {
				if !strings.Contains(p, "{"+name+"}") {
					t.Errorf("%s declares path parameter %s, which the template lacks", where, name)
				}
			}
		}
	}
}

// resolvePointer resolves a local JSON reference ("#/a/b") in doc.
func resolvePointer(doc map[string]any, ref string) (any, error) {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, errorString("not a local reference")
	}
	var cur any = doc
	for _, tok := range strings.Split(rest, "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, errorString("cannot descend into " + tok)
		}
		if cur, ok = m[tok]; !ok {
			return nil, errorString("no " + tok)
		}
	}
	return cur, nil
}

type errorString string

func (e errorString) Error() string { return string(e) }

// TestOpenAPIServed checks GET /v1/openapi.json serves the embedded file.
func TestOpenAPIServed(t *testing.T) {
	raw, _ := loadOpenAPI(t)
	ts := httptest.NewServer(api.New(api.Config{}).Handler())
	defer ts.Close()
	resp, err := http.Get(ts.URL + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", resp.Header.Get("Content-Type"))
	}
	if !bytes.Equal(body, raw) {
		t.Fatal("served document differs from api/openapi.json")
	}
	resp2, err := http.Post(ts.URL+"/v1/openapi.json", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /v1/openapi.json: %d, want 405", resp2.StatusCode)
	}
}
