package bpf

import (
	"fmt"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// The Go-C contract: the enums of c/zonelb.c (counters, config flags,
// listener slots) reach Go only through bpf2go's generated constants. This
// test fails when the C source, the committed object's BTF and the
// generated Go constants disagree (someone edited zonelb.c and did not run
// `make generate`, or edited generated code), and when a counter has no
// Counters field.

// contractEnums are the C enums exported with bpf2go -type, by the prefix
// bpf2go gives their Go constants.
var contractEnums = map[string]string{
	"zlb_counter":       "zonelbZlbCounter",
	"zlb_cfg_flag":      "zonelbZlbCfgFlag",
	"zlb_listener_slot": "zonelbZlbListenerSlot",
}

func TestGoCContract(t *testing.T) {
	src, err := os.ReadFile("c/zonelb.c")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := loadZonelb()
	if err != nil {
		t.Fatal(err)
	}
	goConsts := map[string]map[string]uint64{} // by generated file
	for _, f := range []string{"zonelb_bpfel.go", "zonelb_bpfeb.go"} {
		goConsts[f] = generatedConsts(t, f)
	}
	for enum, goPrefix := range contractEnums {
		inC, err := cEnum(string(src), enum)
		if err != nil {
			t.Fatal(err)
		}
		var bt *btf.Enum
		if err := spec.Types.TypeByName(enum, &bt); err != nil {
			t.Fatalf("enum %s is not in the committed object's BTF (run `make generate`): %v", enum, err)
		}
		inObj := map[string]uint64{}
		for _, v := range bt.Values {
			inObj[v.Name] = v.Value
		}
		if !reflect.DeepEqual(inC, inObj) {
			t.Errorf("enum %s: c/zonelb.c has %v, the committed object %v: run `make generate`", enum, inC, inObj)
		}
		for file, consts := range goConsts {
			inGo := map[string]uint64{}
			for name, v := range consts {
				if c, ok := strings.CutPrefix(name, goPrefix); ok {
					inGo[c] = v
				}
			}
			// bpf2go drops underscores between a digit and a letter
			// (NO_V6_PROXY becomes NO_V6PROXY): compare without them.
			if !reflect.DeepEqual(squash(inObj), squash(inGo)) {
				t.Errorf("enum %s: the object has %v, %s %v: run `make generate`", enum, inObj, file, inGo)
			}
		}
	}
}

// Every counter of the C side is summed into its own Counters field, and
// every Counters field has its counter.
func TestEveryCounterHasItsField(t *testing.T) {
	var c Counters
	seen := map[*uint64]zonelbZlbCounter{}
	for k := range zonelbZlbCounterZLB_C_MAX {
		f := c.field(k)
		if f == nil {
			t.Errorf("counter %d has no Counters field", k)
			continue
		}
		if other, dup := seen[f]; dup {
			t.Errorf("counters %d and %d share a Counters field", other, k)
		}
		seen[f] = k
	}
	n := 0
	for f := range reflect.TypeOf(c).Fields() {
		if f.Type.Kind() == reflect.Uint64 {
			n++
		}
	}
	if n != len(seen) {
		t.Errorf("Counters has %d counter fields, the C side %d counters", n, len(seen))
	}
}

// cEnum parses `enum name { A = 1, B, ... };` from C source: names and
// values (implicit values count up from the previous one).
func cEnum(src, name string) (map[string]uint64, error) {
	m := regexp.MustCompile(`(?s)enum\s+` + name + `\s*\{(.*?)\}`).FindStringSubmatch(src)
	if m == nil {
		return nil, fmt.Errorf("no enum %s in c/zonelb.c", name)
	}
	body := regexp.MustCompile(`//[^\n]*`).ReplaceAllString(m[1], "")
	out := map[string]uint64{}
	next := uint64(0)
	for _, item := range strings.Split(body, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		id, val, explicit := strings.Cut(item, "=")
		id = strings.TrimSpace(id)
		if explicit {
			v, err := strconv.ParseUint(strings.TrimSpace(val), 0, 64)
			if err != nil {
				return nil, fmt.Errorf("enum %s: %s: %w", name, item, err)
			}
			next = v
		}
		out[id] = next
		next++
	}
	return out, nil
}

// generatedConsts returns the typed integer constants of a generated file.
func generatedConsts(t *testing.T, file string) map[string]uint64 {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, s := range gd.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.INT {
					continue
				}
				if v, ok := constant.Uint64Val(constant.MakeFromLiteral(lit.Value, lit.Kind, 0)); ok {
					out[n.Name] = v
				}
			}
		}
	}
	return out
}

func squash(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[strings.ReplaceAll(k, "_", "")] = v
	}
	return out
}
