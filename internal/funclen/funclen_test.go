package funclen

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

func TestNoLongFunctions(t *testing.T) {
	// The trees issue 13 holds to the rule, from the module root.
	roots := []string{"cmd", "daemon", "bpf", "zone", "sim", "internal"}
	module := filepath.Join("..", "..")
	fset := token.NewFileSet()
	files := 0
	for _, root := range roots {
		err := filepath.WalkDir(filepath.Join(module, root), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			if ast.IsGenerated(f) {
				return nil
			}
			files++
			for _, decl := range f.Decls {
				fn, ok := decl.(*ast.FuncDecl)
				if !ok || fn.Body == nil {
					continue
				}
				if n := Lines(fset, fn); n > MaxLines {
					t.Errorf("%s: %s is %d lines (tables aside), over %d: cut it into named steps",
						fset.Position(fn.Pos()), fn.Name.Name, n, MaxLines)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("walk %s: %v", root, err)
		}
	}
	if files < 50 {
		t.Fatalf("read %d Go files under %v, expected the whole tree", files, roots)
	}
}

// Lines takes off tables, and only tables.
func TestLines(t *testing.T) {
	const src = `package p

func table() {
	cases := []struct{ a, b int }{
		{1, 2},
		{3, 4},
	}
	m := map[string]int{
		"x": 1,
	}
	_, _ = cases, m
}

func logic() {
	x := 0
	x++
	x++
	_ = struct{ a int }{
		a: x,
	}
}
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"table": 10 - 3 - 2, "logic": 8}
	for _, decl := range f.Decls {
		fn := decl.(*ast.FuncDecl)
		if got := Lines(fset, fn); got != want[fn.Name.Name] {
			t.Errorf("Lines(%s) = %d, want %d", fn.Name.Name, got, want[fn.Name.Name])
		}
	}
}
