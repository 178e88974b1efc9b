package api_test

// The lint check of error codes (`make lint` runs these tests; so does
// `make test`). regd's error codes are one list, the Code constants of
// registry/errors.go; these tests hold the code base and the docs to it:
//
//   - TestErrorCodesAreConstants: wherever a registry error is made
//     (registry.Errorf, a registry.Error literal), its code is a constant of
//     the list, never a literal or a computed string.
//   - TestErrorCodesNotWrittenInAPI: no handler or middleware in api writes
//     a code as a literal or builds an error body itself; errors.go, the
//     one error exit, is the only writer of error bodies.
//   - TestErrorCodesDocumented: docs/api.md's error table and openapi.json's
//     Error schema list exactly the codes of the list.

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// codeList parses registry/errors.go: the Code constants, name → value.
func codeList(t *testing.T) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(moduleRoot(t), "registry", "errors.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]string{}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Code") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatalf("registry.%s is not a string literal constant", name.Name)
				}
				v, _ := strconv.Unquote(lit.Value)
				codes[name.Name] = v
			}
		}
	}
	if len(codes) < 20 {
		t.Fatalf("found only %d codes in registry/errors.go: the parse is broken", len(codes))
	}
	seen := map[string]string{}
	for name, v := range codes {
		if !regexp.MustCompile(`^[a-z][a-z0-9_]*$`).MatchString(v) {
			t.Errorf("registry.%s = %q is not snake_case", name, v)
		}
		if other, dup := seen[v]; dup {
			t.Errorf("registry.%s and registry.%s are both %q", name, other, v)
		}
		seen[v] = name
	}
	return codes
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// goFile is one parsed non-test source file of the module.
type goFile struct {
	rel string // slash path from the module root
	fs  *token.FileSet
	f   *ast.File
}

func sourceFiles(t *testing.T) []goFile {
	t.Helper()
	root := moduleRoot(t)
	var files []goFile
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		files = append(files, goFile{rel: filepath.ToSlash(rel), fs: fset, f: f})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 30 {
		t.Fatalf("found only %d source files: the walk is broken", len(files))
	}
	return files
}

func TestErrorCodesAreConstants(t *testing.T) {
	codes := codeList(t)
	checked := 0
	for _, gf := range sourceFiles(t) {
		inRegistry := gf.f.Name.Name == "registry"
		// isCode reports whether e names a code of the list, or passes on
		// a parameter of the function it is in (Errorf's own code).
		isCode := func(e ast.Expr, params map[string]bool) bool {
			switch e := e.(type) {
			case *ast.Ident:
				_, listed := codes[e.Name]
				return (inRegistry && listed) || params[e.Name]
			case *ast.SelectorExpr:
				x, ok := e.X.(*ast.Ident)
				_, listed := codes[e.Sel.Name]
				return ok && x.Name == "registry" && listed
			}
			return false
		}
		isRegistryName := func(e ast.Expr, name string) bool {
			switch e := e.(type) {
			case *ast.Ident:
				return inRegistry && e.Name == name
			case *ast.SelectorExpr:
				x, ok := e.X.(*ast.Ident)
				return ok && x.Name == "registry" && e.Sel.Name == name
			}
			return false
		}
		check := func(n ast.Node, params map[string]bool) {
			ast.Inspect(n, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.FuncLit:
					for _, f := range n.Type.Params.List {
						for _, name := range f.Names {
							params[name.Name] = true
						}
					}
				case *ast.CallExpr:
					if isRegistryName(n.Fun, "Errorf") && len(n.Args) >= 2 {
						checked++
						if !isCode(n.Args[1], params) {
							t.Errorf("%s: registry.Errorf with code %s: use a Code constant of registry/errors.go", gf.fs.Position(n.Pos()), exprString(gf, n.Args[1]))
						}
					}
				case *ast.CompositeLit:
					if !isRegistryName(n.Type, "Error") {
						return true
					}
					for _, el := range n.Elts {
						if kv, ok := el.(*ast.KeyValueExpr); ok {
							if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Code" {
								checked++
								if !isCode(kv.Value, params) {
									t.Errorf("%s: registry.Error with code %s: use a Code constant of registry/errors.go", gf.fs.Position(kv.Pos()), exprString(gf, kv.Value))
								}
							}
						}
					}
				}
				return true
			})
		}
		for _, d := range gf.f.Decls {
			params := map[string]bool{}
			if fd, ok := d.(*ast.FuncDecl); ok {
				for _, f := range fd.Type.Params.List {
					for _, name := range f.Names {
						params[name.Name] = true
					}
				}
			}
			check(d, params)
		}
		// Codes live in the list only.
		if inRegistry && gf.rel != "registry/errors.go" {
			for _, d := range gf.f.Decls {
				if gd, ok := d.(*ast.GenDecl); ok && gd.Tok == token.CONST {
					for _, spec := range gd.Specs {
						for _, name := range spec.(*ast.ValueSpec).Names {
							if strings.HasPrefix(name.Name, "Code") {
								t.Errorf("%s: constant %s: error codes are declared in registry/errors.go only", gf.fs.Position(name.Pos()), name.Name)
							}
						}
					}
				}
			}
		}
	}
	if checked < 30 {
		t.Fatalf("checked only %d places that make errors: the check is broken", checked)
	}
}

func TestErrorCodesNotWrittenInAPI(t *testing.T) {
	codes := codeList(t)
	values := map[string]bool{}
	for _, v := range codes {
		values[v] = true
	}
	files := 0
	for _, gf := range sourceFiles(t) {
		if !strings.HasPrefix(gf.rel, "api/") || strings.Count(gf.rel, "/") != 1 {
			continue
		}
		files++
		ast.Inspect(gf.f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BasicLit:
				if v, err := strconv.Unquote(n.Value); err == nil && n.Kind == token.STRING && values[v] {
					t.Errorf("%s: the literal %s is an error code: use its registry.Code constant", gf.fs.Position(n.Pos()), n.Value)
				}
			case *ast.CompositeLit:
				if id, ok := n.Type.(*ast.Ident); ok && (id.Name == "errorBody" || id.Name == "errorDetail") && gf.rel != "api/errors.go" {
					t.Errorf("%s: an error body built outside api/errors.go: return an error instead, the error exit writes it", gf.fs.Position(n.Pos()))
				}
			case *ast.KeyValueExpr:
				if lit, ok := n.Key.(*ast.BasicLit); ok && (lit.Value == `"error"` || lit.Value == `"code"`) {
					t.Errorf("%s: a map with key %s looks like a hand-made error body: return an error instead", gf.fs.Position(n.Pos()), lit.Value)
				}
			}
			return true
		})
	}
	if files < 10 {
		t.Fatalf("found only %d files in api/: the walk is broken", files)
	}
}

func TestErrorCodesDocumented(t *testing.T) {
	codes := codeList(t)
	want := mapValues(codes)
	slices.Sort(want)
	root := moduleRoot(t)

	// docs/api.md: the "## Errors" table, codes in its second column.
	doc, err := os.ReadFile(filepath.Join(root, "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	section, ok := strings.CutPrefix(string(doc)[strings.Index(string(doc), "\n## Errors\n")+1:], "## Errors\n")
	if !ok {
		t.Fatal(`docs/api.md has no "## Errors" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var documented []string
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(line, "|") {
			continue
		}
		for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(cells[2], -1) {
			documented = append(documented, m[1])
		}
	}
	slices.Sort(documented)
	if !slices.Equal(slices.Compact(documented), want) {
		t.Errorf("docs/api.md's error table lists\n  %v\nregistry/errors.go has\n  %v", slices.Compact(documented), want)
	}

	// openapi.json: the Error schema's description of code.
	var api struct {
		Components struct {
			Schemas struct {
				Error struct {
					Properties struct {
						Error struct {
							Properties struct {
								Code struct {
									Description string `json:"description"`
								} `json:"code"`
							} `json:"properties"`
						} `json:"error"`
					} `json:"properties"`
				} `json:"Error"`
			} `json:"schemas"`
		} `json:"components"`
	}
	raw, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &api); err != nil {
		t.Fatal(err)
	}
	desc := api.Components.Schemas.Error.Properties.Error.Properties.Code.Description
	_, list, ok := strings.Cut(desc, "Today: ")
	if !ok {
		t.Fatalf("openapi.json's Error code description %q lists no codes after \"Today: \"", desc)
	}
	inSpec := strings.Split(strings.TrimSuffix(list, "."), ", ")
	slices.Sort(inSpec)
	if !slices.Equal(inSpec, want) {
		t.Errorf("openapi.json's Error schema lists\n  %v\nregistry/errors.go has\n  %v", inSpec, want)
	}
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func exprString(gf goFile, e ast.Expr) string {
	if lit, ok := e.(*ast.BasicLit); ok {
		return lit.Value
	}
	return "(" + gf.fs.Position(e.Pos()).String() + ")"
}
